"""One run of the page, without Gradio: check the inputs, segment into the run's own folder, and
prepare what the page shows (zip, mask previews, score curves).

Every run writes only under its own temporary folder (:meth:`RunFolders.new`), so two browsers at
once never share a file. The segmentation itself is ``referformer segment``'s
(``segment_to_folder``, handed in by the ``serve`` command), so the zip a page offers holds exactly
the ``segment`` layout: ``results.json``, ``<i>_<slug>/<frame>.png`` masks and ``overlay.mp4``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from referformer.errors import UserError
from referformer.inference.frame_files import IMAGE_SUFFIXES
from referformer.inference.mask_files import decode_mask_rle
from referformer.inference.video_io import FrameSource, FrameWindow
from referformer.inference.visualize import draw_overlay, sentence_colour

SEGMENT_DIR = "segment"  # the `segment` layout inside a run's folder
ProgressFn = Callable[[int, "int | None"], None]  # (frames done, estimated total or None)


class SegmentFn(Protocol):
    """``referformer.commands.segment.segment_to_folder`` (the ``serve`` command hands it in)."""

    def __call__(self, predictor: Any, source: FrameSource, sentences: Sequence[str], out_dir: str | Path, *,
                 window: int | None = None, progress: bool = True) -> dict[str, Any]: ...


class RunFolders:
    """Temporary folders of the runs, all under one root created here.

    A folder is removed ``keep_s`` seconds after its run has finished (Gradio has copied what the
    page shows into its own cache by then), when a later run starts; :meth:`close` removes the root.
    """

    def __init__(self, keep_s: float = 600.0, parent: str | Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="referformer-serve-", dir=parent))
        self.keep_s = keep_s
        self._finished: dict[Path, float] = {}
        self._lock = threading.Lock()

    def new(self, kind: str = "run") -> Path:
        """A fresh, empty folder for one run (older finished ones are pruned first)."""
        self.prune()
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root))

    def finished(self, folder: Path) -> None:
        """Mark ``folder`` done: it may be removed after ``keep_s`` seconds."""
        with self._lock:
            self._finished[folder] = time.monotonic()

    def prune(self, now: float | None = None) -> None:
        """Remove the folders finished more than ``keep_s`` seconds ago."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [f for f, t in self._finished.items() if now - t >= self.keep_s]
            for folder in old:
                del self._finished[folder]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every run folder (the server is stopping)."""
        shutil.rmtree(self.root, ignore_errors=True)


# --- inputs -----------------------------------------------------------------------------------
def parse_sentences(text: str | None) -> list[str]:
    """One sentence per non-blank line (blank lines are skipped); ``UserError`` when there is none."""
    sentences = [" ".join(line.split()) for line in (text or "").splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise UserError('the sentence is empty: type at least one sentence, one per line (e.g. "the red circle")')
    return sentences


def parse_count(value: float | str | None, what: str) -> int | None:
    """A positive whole number from a form field; blank gives ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{what} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise UserError(f"{what} must be a whole number of at least 1, got {value}")
    return int(number)


def uploaded_paths(files: str | Path | Sequence[str] | None) -> list[Path]:
    """The uploaded files as a list; ``UserError`` when there is none."""
    paths = [files] if isinstance(files, (str, Path)) else list(files or [])
    if not paths:
        raise UserError("no video: upload a video (or frames), or generate a synthetic example")
    return [Path(p) for p in paths]


def prepare_input(files: str | Path | Sequence[str] | None, folder: Path) -> Path:
    """The path ``open_source`` reads: the one uploaded file (video, GIF or image), or a folder of
    the uploaded images (several frames), made under ``folder``."""
    paths = uploaded_paths(files)
    if len(paths) == 1:
        return paths[0]
    frames = folder / "frames"
    frames.mkdir()
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{path.name}: several files are read as the frames of one video, so each must be an "
                            f"image ({', '.join(sorted(IMAGE_SUFFIXES))}); upload a video as a single file")
        shutil.copyfile(path, frames / path.name)
    return frames


class CountingSource:
    """A :class:`FrameSource` that reports (frames done, estimated total) as its windows are consumed."""

    def __init__(self, source: FrameSource, report: ProgressFn) -> None:
        self._source = source
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._source)

    def windows(self, size: int, *, prefetch: bool = False) -> Iterator[FrameWindow]:
        total = self._source.estimated_length()
        done = 0
        self._report(done, total)
        inner = self._source.windows(size, prefetch=prefetch)
        try:
            for window in inner:
                yield window
                done += len(window)  # asked for the next window: this one is through the model
                self._report(done, total)
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()


# --- outputs ----------------------------------------------------------------------------------
@dataclass
class RunOutput:
    """What a finished run shows: paths in the run's folder, previews and per-frame scores.

    previews: per sentence ``(RGB uint8 [H, W, 3], caption)``, the frame where its score is highest.
    scores: one row per sentence and frame: ``{"frame": t, "name", "sentence", "score"}``.
    """

    folder: Path
    results: Path
    overlay: Path | None
    archive: Path
    summary: dict[str, Any]
    previews: list[tuple[np.ndarray, str]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sentence_label(index: int, text: str, width: int = 48) -> str:
    """``"0: the red circle"``, shortened to ``width`` characters."""
    label = f"{index}: {text}"
    return label if len(label) <= width else label[: width - 1] + "…"


def sentence_colour_hex(index: int) -> str:
    """The overlay colour of sentence ``index`` as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*sentence_colour(index))


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip every file under ``folder`` (paths relative to it); PNG and MP4 are stored, JSON deflated."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                method = zipfile.ZIP_DEFLATED if path.suffix == ".json" else zipfile.ZIP_STORED
                zf.write(path, path.relative_to(folder).as_posix(), compress_type=method)
    return archive


def score_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sentence and frame, the score of ``results.json`` (frames without a finite score left out)."""
    rows = []
    for i, sentence in enumerate(results["sentences"]):
        label = sentence_label(i, sentence["text"])
        for t, frame in enumerate(sentence["frames"]):
            score = frame.get("score")
            if score is not None and math.isfinite(score):
                rows.append({"frame": t, "name": frame["frame"], "sentence": label, "score": float(score)})
    return rows


def mask_previews(source: FrameSource, results: dict[str, Any]) -> list[tuple[np.ndarray, str]]:
    """Per sentence, its mask drawn on the frame where its score is highest, with a caption."""
    best = []
    for sentence in results["sentences"]:
        scores = [f["score"] if f.get("score") is not None else -math.inf for f in sentence["frames"]]
        best.append(int(np.argmax(scores)) if scores else None)
    wanted = {t for t in best if t is not None}
    images: dict[int, np.ndarray] = {}
    if wanted:
        for t, frame in enumerate(source):
            if t in wanted:
                images[t] = frame.image
            if t >= max(wanted):
                break
    previews = []
    for i, (sentence, t) in enumerate(zip(results["sentences"], best)):
        score = "n/a" if sentence["score"] is None else f"{sentence['score']:.3f}"
        caption = f"{i}: {sentence['text']} (query {sentence['query']}, score {score}"
        if t is None or t not in images:
            image = np.zeros((results["height"], results["width"], 3), np.uint8)
            caption += ", no frame)"
        else:
            frame = sentence["frames"][t]
            image = draw_overlay(images[t], [decode_mask_rle(frame["mask_rle"]) > 0], [frame["box_xyxy"]],
                                 [sentence_colour(i)])
            caption += f", frame {frame['frame']})"
        previews.append((image, caption))
    return previews


def segment_run(segment: SegmentFn, predictor: Any, source: FrameSource, sentences: Sequence[str], folder: Path,
                *, window: int | None = None, progress: ProgressFn | None = None) -> RunOutput:
    """Segment ``sentences`` in ``source`` into ``folder/segment`` and prepare what the page shows.

    Raises ``UserError`` (one line) for a bad option or a bad sentence.
    """
    counted = CountingSource(source, progress or (lambda done, total: None))
    out_dir = folder / SEGMENT_DIR
    summary = segment(predictor, counted, sentences, out_dir, window=window, progress=False)  # type: ignore[arg-type]
    results_path = Path(summary["results"])
    results = json.loads(results_path.read_text())
    archive = zip_folder(out_dir, folder / f"{Path(source.info.path).stem or 'video'}-segment.zip")
    overlay = Path(summary["overlay"]) if summary.get("overlay") else None
    return RunOutput(folder=out_dir, results=results_path, overlay=overlay, archive=archive, summary=summary,
                     previews=mask_previews(source, results), scores=score_rows(results),
                     warnings=[str(w) for w in results.get("warnings", [])])
