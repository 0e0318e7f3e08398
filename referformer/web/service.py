"""What the page does, without Gradio: a :class:`WebService` checks a request, runs it in its own
folder and returns a :class:`~referformer.web.runs.RunOutput`; it also generates synthetic examples.

Checks come cheapest first (video given, sentences, model name, options, the file readable) so a
bad request is refused before any model loads. Every failure a user can fix is a ``UserError``
with a one-line message; :mod:`referformer.web.app` shows it on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from referformer.inference.video_io import open_source
from referformer.web.example import PickFn, SyntheticExample, write_synthetic_example
from referformer.web.models import ModelCatalog, PredictorCache
from referformer.web.runs import (ProgressFn, RunFolders, RunOutput, SegmentFn, parse_count, parse_sentences,
                                  prepare_input, segment_run, uploaded_paths)


@dataclass
class RunOptions:
    """What a user tunes: ``window`` (frames per window; ``None``: the model's), ``stride`` (keep
    every k-th frame) and ``max_frames`` (``None``: all). Form values (floats, blanks) are accepted."""

    window: float | str | None = None
    stride: float | str | None = 1
    max_frames: float | str | None = None


@dataclass
class WebService:
    """The models offered, how to segment (``segment_to_folder``), how to pick a synthetic example's
    sentences (``pick_expressions``), and where runs write (one folder each, under ``folders.root``)."""

    catalog: ModelCatalog
    segment_fn: SegmentFn
    pick_fn: PickFn
    predictors: PredictorCache = field(default_factory=PredictorCache)
    folders: RunFolders = field(default_factory=RunFolders)

    def segment(self, files: str | Sequence[str] | None, sentences: str | None, model: str | None,
                options: RunOptions | None = None, progress: ProgressFn | None = None) -> RunOutput:
        """One run: ``files`` (one video, GIF or image, or several frame images), ``sentences`` (one
        per line), ``model`` (a catalog name). ``UserError`` for anything the user can fix."""
        options = options or RunOptions()
        uploaded_paths(files)  # a video was given
        texts = parse_sentences(sentences)
        entry = self.catalog.get(model)
        window = parse_count(options.window, "window")
        stride = parse_count(options.stride, "frame stride") or 1
        max_frames = parse_count(options.max_frames, "max frames")
        folder = self.folders.new("run")
        try:
            source = open_source(prepare_input(files, folder), stride=stride, max_frames=max_frames)
            predictor = self.predictors.get(entry)
            return segment_run(self.segment_fn, predictor, source, texts, folder, window=window, progress=progress)
        finally:
            self.folders.finished(folder)

    def example(self, seed: int | None = None) -> SyntheticExample:
        """A fresh synthetic video (MP4) and three of its expressions, in a folder of its own."""
        folder = self.folders.new("example")
        try:
            return write_synthetic_example(folder, self.pick_fn, seed=seed)
        finally:
            self.folders.finished(folder)

    def close(self) -> None:
        """Remove every run's folder."""
        self.folders.close()
