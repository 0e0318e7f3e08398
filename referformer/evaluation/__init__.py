"""Benchmark metrics, numerically equal to the original evaluation code (no model code here).

* :mod:`referformer.evaluation.measures`: DAVIS-2017 per-frame J (region) and F (boundary)
* :mod:`referformer.evaluation.davis`: DAVIS-2017 statistics, unsupervised task (Ref-DAVIS17)
* :mod:`referformer.evaluation.a2d`: A2D / JHMDB-Sentences P@K, overall / mean IoU, COCO mAP
* :mod:`referformer.evaluation.mevis`: MeViS ``valid_u`` J, F, J&F per expression
* :mod:`referformer.evaluation.refcoco`: RefCOCO/+/g REC precision (box IoU), RIS overall IoU
* :mod:`referformer.evaluation.report`: JSON and table output

See ``docs/evaluation.md`` for what each number is and where we deliberately differ.
"""
