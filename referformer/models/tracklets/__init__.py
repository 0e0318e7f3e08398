"""The top-down tracklet-grounding system (Liang et al. 2021, the Referring YouTube-VOS 2021 winner).

Its typed configuration and presets (``config.py``), tracklet-NMS (``nms.py``), the grounding
transformer and tracklet tokens (``grounding.py``), the instance segmenter (``segmenter.py``) and the
model that holds the learned parts (``model.py``). The pipeline over a video lives in
:mod:`referformer.inference.tracklets`; the design and its open choices in ``docs/tracklets.md``.
"""

from referformer.models.tracklets.config import SegmenterConfig, TRACKLETS_PRESETS, TrackletsConfig, tracklets_preset
from referformer.models.tracklets.grounding import (GroundingOutput, GroundingTransformer, grounding_loss,
                                                    masked_average_pool, normalized_boxes)
from referformer.models.tracklets.model import TrackletGrounder, build_tracklet_grounder
from referformer.models.tracklets.nms import frame_probabilities, tracklet_iou, tracklet_nms, tracklet_scores
from referformer.models.tracklets.segmenter import (InstanceSegmenter, MaskRCNNSegmenter, build_mask_rcnn,
                                                    coco_mask_rcnn)

__all__ = ["GroundingOutput", "GroundingTransformer", "InstanceSegmenter", "MaskRCNNSegmenter", "SegmenterConfig",
           "TRACKLETS_PRESETS", "TrackletGrounder", "TrackletsConfig", "build_mask_rcnn", "build_tracklet_grounder",
           "coco_mask_rcnn", "frame_probabilities", "grounding_loss", "masked_average_pool", "normalized_boxes",
           "tracklet_iou", "tracklet_nms", "tracklet_scores", "tracklets_preset"]
