"""``results.json``: every sentence's query, score and per-frame box / score / RLE mask.

While a run goes, :class:`ResultsWriter` appends one JSON line per window (and per rewrite, final
choice or problem found) to ``results.partial.jsonl``, flushed each time, so a crash loses at most
the window being written. :func:`finalize_results` turns that file into ``results.json`` (at the
end of a run, or by hand after a hard crash) and removes it.

``results.json``::

    {"version": 1, "complete": true, "input": ..., "kind": "video", "width": W, "height": H,
     "fps": ..., "num_frames": N,
     "sentences": [                                # in the order given
        {"text": "a man riding a bike", "query": 3, "score": 0.91, "mask_dir": "0_a_man_riding_a_bike",
         "frames": [{"frame": "00000", "box_xyxy": [x0, y0, x1, y1], "score": 0.93,
                     "mask_rle": {"size": [H, W], "counts": "..."}}, ...]},
        ...]}

- ``complete`` is ``false`` when the run stopped early (an exception, Ctrl-C, a file finalized
  after a crash) or when its input turned out to be cut short (a truncated video); then a
  ``"warnings"`` list holds one sentence per problem found (absent when there is none).
- ``box_xyxy`` is in pixels of the original frame, ``x0, y0, x1, y1``; it is ``null`` on a frame
  whose mask is empty (the object was not found there, and the box head's output means nothing).
- ``mask_rle`` is COCO compressed RLE (pycocotools), ``counts`` decoded to ``str``:
  ``pycocotools.mask.decode`` reads it back after ``counts.encode()``, or use
  :func:`~referformer.inference.mask_files.decode_mask_rle`.
- A sentence's ``query`` and ``score`` are what the predictor reports; when windows chose different
  queries, ``query`` is the one that covers the most frames and ``score`` the frame-weighted mean
  of the window scores.
- The file is strict JSON: a number that is not finite (NaN, infinity: a frame rate, a score) is
  written as ``null``, never as ``NaN`` / ``Infinity``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from referformer.errors import UserError
from referformer.inference.mask_files import encode_mask_rle, sentence_dir_name
from referformer.inference.results import SentenceWindowResult

RESULTS_JSON = "results.json"
RESULTS_PARTIAL = "results.partial.jsonl"
RESULTS_VERSION = 1


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by ``None`` and numpy scalars
    and arrays turned into Python numbers and lists, recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    """Compact strict JSON of ``value`` (through :func:`json_safe`: no ``NaN`` / ``Infinity``)."""
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)


def _box(box: np.ndarray, has_mask: bool) -> list[float] | None:
    """A frame's ``box_xyxy``: ``None`` when its mask is empty or a coordinate is not finite."""
    values = [float(v) for v in box]
    return values if has_mask and all(math.isfinite(v) for v in values) else None


def _sentence_record(names: Sequence[str], result: SentenceWindowResult) -> dict[str, Any]:
    has_mask = result.frames_with_mask()
    frames = [
        {
            "frame": name,
            "box_xyxy": _box(result.boxes_xyxy[t], bool(has_mask[t])),
            "score": float(result.frame_scores[t]),
            "mask_rle": encode_mask_rle(result.masks[t]),
        }
        for t, name in enumerate(names)
    ]
    return {"query": int(result.query), "score": float(result.score), "frames": frames}


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
        self._file.write(dumps(record) + "\n")
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

    def mark_incomplete(self, reason: str) -> None:
        """Record that the results do not cover the whole input (``reason``: one sentence, e.g.
        a truncated video); ``results.json`` then says ``"complete": false`` and lists it under
        ``"warnings"``, even when the run itself ended normally."""
        self._append({"type": "incomplete", "reason": str(reason)})

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
    last line cut in the middle by the crash is ignored; ``complete`` is also ``False`` when the
    run recorded a problem with its input (:meth:`ResultsWriter.mark_incomplete`). The JSON file is written atomically
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
    problems: list[str] = []  # why the results do not cover the whole input
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
        elif kind == "incomplete":
            problems.append(record["reason"])
    for i, sentence in enumerate(sentences):
        queries: Counter = Counter()
        weighted_score, scored_frames = 0.0, 0
        for _, count, query, score in windows[i]:
            queries[query] += count
            if score is not None:  # a window score that was not finite is stored as null
                weighted_score += score * count
                scored_frames += count
        if queries:
            # most frames; ties go to the query seen first
            sentence["query"] = queries.most_common(1)[0][0]
            sentence["score"] = weighted_score / scored_frames if scored_frames else None
        if final[i]:
            sentence.update(final[i])
        if overrides is not None and overrides[i]:
            sentence.update(overrides[i])
    metadata = {k: v for k, v in header.items() if k not in ("type", "version", "sentences")}
    results = {
        "version": RESULTS_VERSION,
        "complete": bool(complete) and not problems,
        **metadata,
        "num_frames": num_frames,
        "sentences": sentences,
    }
    if problems:
        results["warnings"] = problems
    results = json_safe(results)
    tmp_path = out_dir / (RESULTS_JSON + ".tmp")
    with open(tmp_path, "w", encoding="utf-8") as out:
        out.write(dumps(results))
    os.replace(tmp_path, out_dir / RESULTS_JSON)
    partial_path.unlink()
    return results
