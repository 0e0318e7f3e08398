"""Outputs of ``referformer segment``, written incrementally, window by window.

Layout of the output folder ``DIR``::

    DIR/results.json               every sentence's query, score and per-frame box / score / RLE
    DIR/results.partial.jsonl      the same, one JSON line per window, while the run is going
    DIR/<i>_<slug>/<frame>.png     binary mask of sentence i (0-based), 0/255 'L' PNG per frame
    DIR/overlay.mp4                H.264 overlay of all sentences (see visualize.py)

What survives a crash: PNG masks are written as each window finishes, the overlay is a fragmented
MP4 flushed frame by frame, and each window's results are appended (and flushed) to
``results.partial.jsonl``. At the end the JSON Lines file is turned into ``results.json`` and
removed. A Python exception or Ctrl-C also ends in a ``results.json`` (with ``"complete": false``);
after a hard crash (killed process) the partial file stays, and :func:`finalize_results` turns it
into ``results.json`` (``python -c "from referformer.inference.writers import finalize_results;
finalize_results('DIR')"``).

``results.json``::

    {"version": 1, "complete": true, "input": ..., "kind": "video", "width": W, "height": H,
     "fps": ..., "num_frames": N,
     "sentences": [                                # in the order given
        {"text": "a man riding a bike", "query": 3, "score": 0.91, "mask_dir": "0_a_man_riding_a_bike",
         "frames": [{"frame": "00000", "box_xyxy": [x0, y0, x1, y1], "score": 0.93,
                     "mask_rle": {"size": [H, W], "counts": "..."}}, ...]},
        ...]}

Boxes are in pixels of the original frame, ``x0, y0, x1, y1``. ``mask_rle`` is COCO compressed RLE
(pycocotools), ``counts`` decoded to ``str``: ``pycocotools.mask.decode`` reads it back after
``counts.encode()``, or use :func:`decode_mask_rle`. A sentence's ``query`` and ``score`` are what
the predictor reports; when windows chose different queries, ``query`` is the one that covers the
most frames and ``score`` the frame-weighted mean of the window scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from referformer.errors import UserError
from referformer.inference.visualize import OverlayRenderer, OverlayVideoWriter

RESULTS_JSON = "results.json"
RESULTS_PARTIAL = "results.partial.jsonl"
OVERLAY_MP4 = "overlay.mp4"
OVERLAY_RENDERING = "rendering.overlay.mp4"  # the overlay being re-drawn, renamed when done
SPILL_PREFIX = ".referformer-spill-"  # temporary folders of the predictor's spilled mask logits
RESULTS_VERSION = 1
# Frame rate of overlay.mp4 when the input has none (a folder of frames, a single image).
DEFAULT_OVERLAY_FPS = 10.0
_MASK_DIR_PATTERN = re.compile(r"^\d+_[a-z0-9_]*$")


@dataclass
class SentenceWindowResult:
    """The segmentation of one sentence on one window of ``T`` frames (what the predictor returns).

    Attributes:
        query: index of the object query chosen for the sentence.
        score: score of that query on the window (the predictor's selection score, in [0, 1]).
        masks: boolean ``[T, H, W]`` at the original frame size (``True`` = the object).
        boxes_xyxy: float ``[T, 4]``, pixels of the original frame, ``x0, y0, x1, y1``.
        frame_scores: float ``[T]``, the chosen query's score on each frame.
    """

    query: int
    score: float
    masks: np.ndarray
    boxes_xyxy: np.ndarray
    frame_scores: np.ndarray

    @classmethod
    def from_prediction(cls, prediction: Any) -> SentenceWindowResult:
        """Convert a :class:`referformer.inference.api.SentencePrediction` (torch tensors) of one
        window; the window score is the chosen query's mean score, ``query_scores[query]``."""

        def numpy(value: Any) -> np.ndarray:
            return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

        query = int(prediction.query)
        return cls(
            query=query,
            score=float(numpy(prediction.query_scores)[query]),
            masks=numpy(prediction.masks).astype(bool, copy=False),
            boxes_xyxy=numpy(prediction.boxes).astype(np.float64, copy=False),
            frame_scores=numpy(prediction.scores).astype(np.float64, copy=False),
        )


# --- small helpers -----------------------------------------------------------------------------


def encode_mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a boolean ``[H, W]`` mask: ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask_rle`: boolean ``[H, W]``."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def sentence_slug(text: str, max_length: int = 40) -> str:
    """A folder-safe ASCII version of a sentence: ``"The dog!"`` -> ``"the_dog"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    slug = slug[:max_length].rstrip("_")
    return slug or "sentence"


def sentence_dir_name(index: int, text: str) -> str:
    """Mask folder of sentence ``index`` (0-based): ``"<index>_<slug>"``."""
    return f"{index}_{sentence_slug(text)}"


def check_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check that ``path`` can be used as the output folder, without creating anything.

    An existing path is refused unless ``overwrite`` (then it must be a folder).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"output path {path} exists and is not a folder: choose another --out")
        if not overwrite:
            raise UserError(f"output folder {path} already exists: pass --overwrite or choose another --out")
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {parent}: choose another --out")
    return path


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the output folder; with ``overwrite``, first remove the outputs of an earlier run.

    Only what a run writes is removed (``results.json``, ``results.partial.jsonl``,
    ``overlay.mp4`` and ``<i>_<slug>/`` folders holding only PNG files); other files are left.
    """
    path = check_output_dir(path, overwrite)
    if path.exists():
        for name in (RESULTS_JSON, RESULTS_PARTIAL, OVERLAY_MP4, OVERLAY_RENDERING):
            (path / name).unlink(missing_ok=True)
        for child in path.iterdir():
            is_mask_dir = child.is_dir() and _MASK_DIR_PATTERN.match(child.name)
            if is_mask_dir and all(f.is_file() and f.suffix == ".png" for f in child.iterdir()):
                shutil.rmtree(child)
            elif child.is_dir() and child.name.startswith(SPILL_PREFIX):  # left by a killed run
                shutil.rmtree(child)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {path}: {error.strerror or error}") from None
    return path


def _as_mask_array(masks: Any, shape: tuple[int, int, int], what: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != shape:
        raise ValueError(f"{what}: expected masks of shape {list(shape)}, got {list(masks.shape)}")
    return masks if masks.dtype == bool else masks > 0


def _sentence_record(names: Sequence[str], result: SentenceWindowResult) -> dict[str, Any]:
    frames = [
        {
            "frame": name,
            "box_xyxy": [float(v) for v in result.boxes_xyxy[t]],
            "score": float(result.frame_scores[t]),
            "mask_rle": encode_mask_rle(result.masks[t]),
        }
        for t, name in enumerate(names)
    ]
    return {"query": int(result.query), "score": float(result.score), "frames": frames}


# --- results.partial.jsonl -> results.json -----------------------------------------------------


class ResultsWriter:
    """Appends one JSON line per window to ``results.partial.jsonl``; :meth:`finalize` ends it.

    Args:
        out_dir: the output folder (exists).
        sentences: the sentences, in order.
        metadata: top-level fields of ``results.json`` (input, kind, width, height, fps...).
    """

    def __init__(self, out_dir: Path, sentences: Sequence[str], metadata: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.sentences = list(sentences)
        self.partial_path = self.out_dir / RESULTS_PARTIAL
        self._file: TextIO | None = open(self.partial_path, "w", encoding="utf-8")  # noqa: SIM115
        header = {
            "type": "header",
            "version": RESULTS_VERSION,
            **metadata,
            "sentences": [
                {"text": text, "mask_dir": sentence_dir_name(i, text)}
                for i, text in enumerate(self.sentences)
            ],
        }
        self._append(header)

    def _append(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "the writer is finalized"
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def write_window(
        self, names: Sequence[str], results: Sequence[SentenceWindowResult], start: int | None = None
    ) -> None:
        """Append one window: per sentence, its query/score and per-frame box, score and RLE.

        ``start`` is the position of the window's first frame among all frames (for rewrites).
        """
        sentences = [_sentence_record(names, result) for result in results]
        record: dict[str, Any] = {"type": "window", "frames": list(names), "sentences": sentences}
        if start is not None:
            record["start"] = int(start)
        self._append(record)

    def rewrite_window(self, start: int, names: Sequence[str], sentence: int, result: SentenceWindowResult) -> None:
        """Append a rewrite: sentence ``sentence``'s frames ``start .. start + len(names)`` become ``result``."""
        self._append({"type": "rewrite", "start": int(start), "sentence": int(sentence),
                      **_sentence_record(names, result)})

    def write_final(self, choices: Sequence[dict[str, Any] | None]) -> None:
        """Append the sentence-level fields chosen over the whole video (e.g. ``query``, ``score``)."""
        self._append({"type": "final", "sentences": [dict(c) if c else None for c in choices]})

    def finalize(
        self, *, complete: bool = True, overrides: Sequence[dict[str, Any] | None] | None = None
    ) -> dict[str, Any]:
        """Close the JSON Lines file, write ``results.json`` and remove the partial file.

        ``overrides`` (one dict or ``None`` per sentence) replaces sentence-level fields, e.g. a
        ``query``/``score`` the predictor selected over the whole video. Returns the results.
        """
        if self._file is not None:
            self._file.close()
            self._file = None
        return finalize_results(self.out_dir, complete=complete, overrides=overrides)


def _read_records(partial_path: Path) -> list[dict[str, Any]]:
    records = []
    with open(partial_path, encoding="utf-8") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is complete
    if not records or records[0].get("type") != "header":
        raise UserError(f"{partial_path} is not a referformer results file (no header line)")
    return records


def finalize_results(
    out_dir: str | Path,
    *,
    complete: bool = False,
    overrides: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Turn ``out_dir/results.partial.jsonl`` into ``out_dir/results.json``; return its content.

    Used at the end of a run, and by hand after a crash (then ``complete`` stays ``False``). A
    last line cut in the middle by the crash is ignored. The JSON file is written atomically
    (temporary file, then rename) and the partial file removed.
    """
    out_dir = Path(out_dir)
    partial_path = out_dir / RESULTS_PARTIAL
    if not partial_path.is_file():
        raise UserError(f"no {RESULTS_PARTIAL} in {out_dir}: nothing to finalize")
    header, *records = _read_records(partial_path)
    sentences = [
        {"text": s["text"], "query": None, "score": None, "mask_dir": s["mask_dir"], "frames": []}
        for s in header["sentences"]
    ]
    # per sentence: [start, count, query, score] of each window, updated by rewrites
    windows: list[list[list[Any]]] = [[] for _ in sentences]
    final: list[dict[str, Any] | None] = [None] * len(sentences)
    num_frames = 0
    for record in records:
        kind = record.get("type")
        if kind == "window":
            count = len(record["frames"])
            start = record.get("start", num_frames)
            num_frames += count
            for i, result in enumerate(record["sentences"]):
                sentences[i]["frames"].extend(result["frames"])
                windows[i].append([start, count, result["query"], result["score"]])
        elif kind == "rewrite":
            i, start, frames = record["sentence"], record["start"], record["frames"]
            sentences[i]["frames"][start : start + len(frames)] = frames
            for window in windows[i]:
                if window[0] == start:
                    window[2:] = [record["query"], record["score"]]
        elif kind == "final":
            final = [f or None for f in record["sentences"]]
    for i, sentence in enumerate(sentences):
        queries: Counter = Counter()
        weighted_score = 0.0
        for _, count, query, score in windows[i]:
            queries[query] += count
            weighted_score += score * count
        if queries:
            # most frames; ties go to the query seen first
            sentence["query"] = queries.most_common(1)[0][0]
            sentence["score"] = weighted_score / max(1, sum(queries.values()))
        if final[i]:
            sentence.update(final[i])
        if overrides is not None and overrides[i]:
            sentence.update(overrides[i])
    metadata = {k: v for k, v in header.items() if k not in ("type", "version", "sentences")}
    results = {
        "version": RESULTS_VERSION,
        "complete": bool(complete),
        **metadata,
        "num_frames": num_frames,
        "sentences": sentences,
    }
    tmp_path = out_dir / (RESULTS_JSON + ".tmp")
    with open(tmp_path, "w", encoding="utf-8") as out:
        json.dump(results, out, separators=(",", ":"))
    os.replace(tmp_path, out_dir / RESULTS_JSON)
    partial_path.unlink()
    return results


# --- PNG masks -------------------------------------------------------------------------------


class MaskPngWriter:
    """Writes ``out_dir/<i>_<slug>/<frame>.png``: 0/255 single-channel ('L') PNG masks."""

    def __init__(self, out_dir: Path, sentences: Sequence[str]):
        self.dirs = [Path(out_dir) / sentence_dir_name(i, text) for i, text in enumerate(sentences)]
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, sentence_index: int, names: Sequence[str], masks: np.ndarray) -> None:
        """Save boolean masks ``[T, H, W]`` of one sentence, one PNG per frame name."""
        for name, mask in zip(names, masks):
            pixels = np.asarray(mask, dtype=np.uint8) * np.uint8(255)
            # zlib level 1: binary masks compress almost as well, several times faster
            Image.fromarray(pixels).save(self.dirs[sentence_index] / f"{name}.png", compress_level=1)


# --- everything together ---------------------------------------------------------------------


class SegmentationWriter:
    """All outputs of a run: results (JSON Lines, then JSON), PNG masks and the overlay video.

    Use as a context manager; leaving it normally marks the results complete, leaving it with an
    exception still writes ``results.json`` (``"complete": false``) and closes the video properly.

    Args:
        out_dir: output folder; refused if it exists, unless ``overwrite``.
        sentences: the sentences, in order.
        width, height: frame size in pixels.
        fps: frame rate of the overlay (``None``: :data:`DEFAULT_OVERLAY_FPS`).
        metadata: extra top-level fields of ``results.json`` (input path, kind...).
        save_masks, save_overlay: write the PNG masks / ``overlay.mp4``.
        alpha: opacity of mask colours in the overlay.
        background: write each window in a background thread while the caller computes the
            next one (at most one window waits; H.264 encoding and PNG compression release the
            GIL).
    """

    def __init__(
        self,
        out_dir: str | Path,
        sentences: Sequence[str],
        *,
        width: int,
        height: int,
        fps: float | None = None,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        save_masks: bool = True,
        save_overlay: bool = True,
        alpha: float = 0.5,
        background: bool = False,
    ):
        self.out_dir = prepare_output_dir(out_dir, overwrite)
        self.sentences = list(sentences)
        self.width, self.height = width, height
        self.fps = fps if fps else DEFAULT_OVERLAY_FPS
        self.frames_written = 0
        # per sentence: frames whose mask is not empty
        self.frames_with_mask = [0] * len(self.sentences)
        self.overrides: list[dict[str, Any] | None] | None = None
        meta = {"width": width, "height": height, "fps": fps, **(metadata or {})}
        self.results = ResultsWriter(self.out_dir, self.sentences, meta)
        self.masks = MaskPngWriter(self.out_dir, self.sentences) if save_masks else None
        self.renderer: OverlayRenderer | None = None
        self.video: OverlayVideoWriter | None = None
        if save_overlay:
            self.renderer = OverlayRenderer(self.sentences, width, height, alpha=alpha)
            self.video = OverlayVideoWriter(self.out_dir / OVERLAY_MP4, *self.renderer.output_size, self.fps)
        self.summary: dict[str, Any] | None = None
        self.frames_submitted = 0
        # frames whose masks were rewritten after they were first written (the overlay is then stale)
        self.frames_rewritten = 0
        self._window_mask_counts: dict[tuple[int, int], int] = {}  # (start, sentence) -> frames with mask
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="referformer-writer")
            if background
            else None
        )
        self._pending: Future | None = None

    def write_window(
        self, names: Sequence[str], images: np.ndarray | None, results: Sequence[SentenceWindowResult]
    ) -> None:
        """Write one window: ``names`` (T frame names), ``images`` RGB ``uint8`` ``[T, H, W, 3]``
        (needed for the overlay only), and one :class:`SentenceWindowResult` per sentence.

        With ``background=True`` the window is checked here and written by the writer thread
        (the arrays must not be modified afterwards); an error of the previous window's writing
        is raised here.
        """
        if len(results) != len(self.sentences):
            raise ValueError(f"expected {len(self.sentences)} sentence results, got {len(results)}")
        shape = (len(names), self.height, self.width)
        results = [
            SentenceWindowResult(
                query=r.query,
                score=r.score,
                masks=_as_mask_array(r.masks, shape, f"sentence {i}"),
                boxes_xyxy=np.asarray(r.boxes_xyxy, dtype=np.float64).reshape(len(names), 4),
                frame_scores=np.asarray(r.frame_scores, dtype=np.float64).reshape(len(names)),
            )
            for i, r in enumerate(results)
        ]
        if self.video is not None and images is None:
            raise ValueError("the overlay needs the window's images")
        start = self.frames_submitted
        self.frames_submitted += len(names)
        self._submit(self._write_now, start, list(names), images, results)

    def rewrite_window(self, start: int, names: Sequence[str], sentence: int, result: SentenceWindowResult) -> None:
        """Replace sentence ``sentence``'s results on the frames ``start .. start + T`` written earlier.

        Rewrites the PNG masks and appends the new results to the JSON Lines file (they replace the
        old ones in ``results.json``). The overlay is not touched: see :meth:`rerender_overlay`.
        """
        shape = (len(names), self.height, self.width)
        result = SentenceWindowResult(
            query=result.query,
            score=result.score,
            masks=_as_mask_array(result.masks, shape, f"sentence {sentence}"),
            boxes_xyxy=np.asarray(result.boxes_xyxy, dtype=np.float64).reshape(len(names), 4),
            frame_scores=np.asarray(result.frame_scores, dtype=np.float64).reshape(len(names)),
        )
        self._submit(self._rewrite_now, int(start), list(names), int(sentence), result)

    def set_final(self, choices: Sequence[dict[str, Any] | None]) -> None:
        """Record the sentence-level fields chosen over the whole video (``query``, ``score``), one
        dict (or ``None``) per sentence; they are written to the JSON Lines file at once, so they
        survive a crash, and override the per-window values in ``results.json``."""
        if len(choices) != len(self.sentences):
            raise ValueError(f"expected {len(self.sentences)} choices, got {len(choices)}")
        self._wait_pending()
        self.results.write_final(choices)

    def _submit(self, function: Any, *args: Any) -> None:
        if self._executor is None:
            function(*args)
            return
        self._wait_pending()  # at most one window queued: memory stays bounded, order kept
        self._pending = self._executor.submit(function, *args)

    def _wait_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write_now(
        self, start: int, names: list[str], images: np.ndarray | None, results: list[SentenceWindowResult]
    ) -> None:
        if self.masks is not None:
            for i, result in enumerate(results):
                self.masks.write(i, names, result.masks)
        if self.video is not None and self.renderer is not None and images is not None:
            for t, image in enumerate(np.asarray(images)):
                drawn = self.renderer.draw(
                    image, [r.masks[t] for r in results], [r.boxes_xyxy[t] for r in results]
                )
                self.video.write(drawn)
        self.results.write_window(names, results, start)  # last: a window in the JSON is fully on disk
        self.frames_written += len(names)
        for i, result in enumerate(results):
            count = int(result.masks.reshape(len(names), -1).any(axis=1).sum())
            self._window_mask_counts[start, i] = count
            self.frames_with_mask[i] += count

    def _rewrite_now(self, start: int, names: list[str], sentence: int, result: SentenceWindowResult) -> None:
        if self.masks is not None:
            self.masks.write(sentence, names, result.masks)
        self.results.rewrite_window(start, names, sentence, result)
        count = int(result.masks.reshape(len(names), -1).any(axis=1).sum())
        self.frames_with_mask[sentence] += count - self._window_mask_counts.get((start, sentence), 0)
        self._window_mask_counts[start, sentence] = count
        self.frames_rewritten += len(names)

    def rerender_overlay(self, images: Iterable[np.ndarray]) -> int:
        """Draw ``overlay.mp4`` again from the final results (after :meth:`close`), e.g. when windows
        were rewritten. ``images``: the frames again, RGB ``uint8`` ``[H, W, 3]``, in order (re-read
        the source). Written to a temporary file first, then renamed over the old overlay. Returns
        the number of frames drawn."""
        if self.summary is None:
            raise RuntimeError("close() the writer before re-rendering the overlay")
        if self.renderer is None:
            return 0
        final_path = self.out_dir / OVERLAY_MP4
        tmp_path = self.out_dir / OVERLAY_RENDERING
        per_sentence = [s["frames"] for s in self.summary["sentences"]]
        count = 0
        try:
            with OverlayVideoWriter(tmp_path, *self.renderer.output_size, self.fps) as video:
                for t, image in enumerate(images):
                    if t >= self.summary["num_frames"]:
                        break
                    masks = [decode_mask_rle(frames[t]["mask_rle"]) for frames in per_sentence]
                    boxes = [frames[t]["box_xyxy"] for frames in per_sentence]
                    video.write(self.renderer.draw(image, masks, boxes))
                    count += 1
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        os.replace(tmp_path, final_path)
        return count

    def close(self, *, complete: bool = True) -> dict[str, Any]:
        """Finish the overlay and write ``results.json``; returns its content (idempotent)."""
        if self.summary is None:
            try:
                try:
                    self._wait_pending()
                finally:
                    if self._executor is not None:
                        self._executor.shutdown(wait=True)
                    if self.video is not None:
                        self.video.close()
            finally:
                self.summary = self.results.finalize(complete=complete, overrides=self.overrides)
        return self.summary

    def __enter__(self) -> SegmentationWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)
