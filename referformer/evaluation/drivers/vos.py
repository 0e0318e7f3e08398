"""Semi-supervised VOS: a propagator over every video of a split, scored by the DAVIS J and F.

``referformer evaluate --task vos --dataset davis|ytvos|synthetic --root DIR --propagator NAME``.
Per video the protocol (:mod:`referformer.evaluation.vos`) says which ground-truth masks are given
and which frames are scored; the propagator streams the video (bounded memory) and its label maps
are written as palette PNGs ``<out>/Annotations/<video>/<frame>.png`` (the ground truth's palette),
which is also the DAVIS-2017 semi-supervised result folder layout. J and F of every object are
computed per window as the results come, and kept in the video's record (sharded, resumable runs:
:mod:`.runner`). Rank 0 reports ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
``F-Recall``, ``F-Decay`` (means over all objects, as DAVIS) and ``per_object`` / ``per_video``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from referformer.data.vos import VOSVideo, read_vos_split
from referformer.errors import UserError
from referformer.evaluation.davis import DavisResult, ObjectScore, object_statistics
from referformer.evaluation.drivers.outputs import read_palette, save_palette_png
from referformer.evaluation.drivers.runner import RunContext, publish_dir, run_units, staging_dir
from referformer.evaluation.measures import boundary_f_measure, region_similarity
from referformer.evaluation.vos import VOSObject, object_score, protocol_objects, scored_frames
from referformer.inference.propagation import PropagationBackend, PropagationSession
from referformer.inference.decoders import folder_info
from referformer.inference.propagation_prompts import prompts_from_label_maps
from referformer.inference.video_io import FrameSource

__all__ = ["VOS_DATASETS", "VOS_DEFAULT_SPLITS", "evaluate_vos"]

VOS_DATASETS = ("davis", "ytvos", "synthetic")
VOS_DEFAULT_SPLITS = {"davis": "val", "ytvos": "train", "synthetic": "valid"}
PREDICTIONS_DIR = "Annotations"
LAYOUT_NOTES = {
    "ref-davis": "read from the converted Ref-DAVIS17 layout, whose masks are DAVIS's unsupervised annotations "
                 "(object ids differ from the semi-supervised ones): numbers are not the official DAVIS-2017 "
                 "semi-supervised ones; point --root at the raw DAVIS-2017 release for those",
}


def _process(video: VOSVideo, dataset: str, backend: PropagationBackend, out_dir: Path, palette: list[int],
             window: int) -> dict[str, Any]:
    positions = video.annotated()
    gt = {t: np.asarray(video.labels(t)) for t in positions}
    objects = protocol_objects(dataset, gt)
    record: dict[str, Any] = {"video": video.video_id, "num_frames": len(video.frame_names), "objects": []}
    if not objects:
        return record
    given: dict[int, list[int]] = {}
    for obj in objects:
        given.setdefault(obj.given, []).append(obj.object_id)
    label_maps = {t: np.where(np.isin(gt[t], ids), gt[t], 0) for t, ids in given.items()}
    scored = {o.object_id: set(scored_frames(dataset, o, positions, len(video.frame_names))) for o in objects}
    j: dict[int, list[float]] = {o.object_id: [] for o in objects}
    f: dict[int, list[float]] = {o.object_id: [] for o in objects}
    staging = staging_dir(out_dir, video.video_id)
    prompts = prompts_from_label_maps(label_maps)
    with PropagationSession(backend, _frames(video), window=window) as session:
        windows = session.run(prompts) if prompts else _empty_windows(session, window)
        for part in windows:
            for offset, (name, labels) in enumerate(zip(part.names, part.labels)):
                save_palette_png(labels, staging / f"{name}.png", palette)
                t = part.start + offset
                for obj in objects:
                    if t in scored[obj.object_id]:
                        truth, pred = gt[t] == obj.object_id, labels == obj.object_id
                        j[obj.object_id].append(float(region_similarity(pred, truth)))
                        f[obj.object_id].append(float(boundary_f_measure(pred, truth)))
    publish_dir(staging, out_dir / PREDICTIONS_DIR / video.video_id)
    record["objects"] = [{"object_id": o.object_id, "given": o.given, "j": j[o.object_id], "f": f[o.object_id]}
                         for o in objects]
    return record


def _frames(video: VOSVideo) -> FrameSource:
    """The video's frames in ``video.frame_names`` order, decoded lazily."""
    paths = list(video.frame_paths)
    return FrameSource(folder_info(paths[0].parent, paths, 1, None), frame_paths=paths)


def _empty_windows(session: PropagationSession, window: int) -> Any:
    """No object to give (an object whose given mask is empty): all-background label maps."""
    from referformer.inference.propagation import PropagatedWindow

    names = session.load()
    assert session.size is not None
    for start in range(0, len(names), window):
        part = names[start:start + window]
        yield PropagatedWindow(start, part, [], np.zeros((len(part), *session.size), np.uint8),
                               np.zeros((len(part), 0, *session.size), np.float32), np.zeros((len(part), 0), np.int8))


def evaluate_vos(dataset: str, root: str | Path, split: str | None, backend: PropagationBackend, out_dir: str | Path,
                 *, window: int = 8, context: RunContext | None = None, progress: bool = True) -> dict[str, Any] | None:
    """Run ``backend`` over every video of the split and score it; returns the report on rank 0."""
    if dataset not in VOS_DATASETS:
        raise UserError(f"--task vos supports {', '.join(VOS_DATASETS)}, not {dataset!r}")
    out_dir, context = Path(out_dir), context or RunContext()
    split = split or VOS_DEFAULT_SPLITS[dataset]
    videos = read_vos_split(root, split, dataset)
    first_gt = next((p for v in videos for p in v.annotations.values()), None)
    palette = read_palette([first_gt] if first_gt is not None else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    records = run_units(videos, lambda v: v.video_id,
                        lambda v: _process(v, dataset, backend, out_dir, palette, window),
                        out_dir, context, desc=f"vos {dataset}", progress=progress)
    if records is None:
        return None
    objects: list[ObjectScore] = []
    for record in records:
        for row in record["objects"]:
            objects.append(object_score(record["video"], VOSObject(row["object_id"], row["given"]), row["j"], row["f"]))
    result = DavisResult(objects).to_dict()
    layout = videos[0].layout if videos else dataset
    report: dict[str, Any] = {"task": "vos", "dataset": dataset, "split": split, "layout": layout,
                              "propagator": getattr(backend, "name", type(backend).__name__),
                              "num_videos": len(records), "num_objects": len(objects), **result}
    if layout in LAYOUT_NOTES:
        report["note"] = LAYOUT_NOTES[layout]
    report["per_video"] = [{"video": r["video"], "num_frames": r["num_frames"], "num_objects": len(r["objects"]),
                            **_video_means(r["objects"])} for r in records]
    report["outputs"] = {"predictions": str(out_dir / PREDICTIONS_DIR)}
    return report


def _video_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    j = float(np.mean([object_statistics(np.asarray(r["j"])).mean for r in rows]))
    f = float(np.mean([object_statistics(np.asarray(r["f"])).mean for r in rows]))
    return {"J&F": (j + f) / 2, "J": j, "F": f}
