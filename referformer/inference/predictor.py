"""The streaming ``Predictor``: the front door of the Python API and the engine of ``referformer segment``.

    from referformer import Predictor
    predictor = Predictor.from_pretrained("converted/ytvos-r50")     # or an official .pth + preset=
    results = predictor.predict("clip.mp4", ["a man riding a bike", "the dog"])
    results[0].masks        # bool [T, H, W] at the original size, like ``segment_video``

How a video flows (one window = ``window`` consecutive frames, 36 by default like the original's
``inference_davis.py``):

1. each window is pre-processed exactly like ``segment_video`` (PIL resize to short side 360,
   ImageNet normalisation) and encoded ONCE (``encode_video``): the visual backbone is shared by
   all sentences;
2. the sentence-dependent part (``decode``) runs batched over the sentences (text encoded once per
   stream, sentences of similar token length batched together);
3. per sentence, small per-frame data of every query are kept for the whole video (sigmoid class
   scores ``[T, Q, K]`` and boxes ``[T, Q, 4]``: a few KB per frame), and the stride-4 mask logits
   of every query (``[T, Q, H/4, W/4]``) are spilled to a temporary ``.npy`` file per window
   (``float16`` by default), so memory does not grow with the length of the video;
4. each window's masks are produced at once for the *provisional* query (the best over the frames
   seen so far), so outputs are written incrementally;
5. at the end, the final query of each sentence is the argmax over the whole video of the mean
   score (as the original does inside its one clip); windows whose provisional query differs are
   re-segmented from the spilled logits (:meth:`SegmentationStream.corrections`).

A video that fits in one window gives exactly ``segment_video`` on all frames (same operations on
the same tensors; the provisional query of the only window is the final one). Longer videos differ
from the original in what windowing implies: the CM-FPN's temporal self-attention and a Video-Swin
backbone only see frames of the same window (see docs/segment.md).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from referformer.errors import CheckpointMismatchError, UserError
from referformer.inference.api import SentencePrediction
from referformer.inference.device import autocast, resolve_device, resolve_dtype
from referformer.inference.postprocess import cxcywh_to_xyxy_pixels, upsample_mask_logits
from referformer.inference.preprocess import FramesInput, load_frames, preprocess_frames
from referformer.inference.video_io import Frame, FrameSource, FrameWindow, iter_windows, open_source
from referformer.inference.writers import SPILL_PREFIX, SentenceWindowResult
from referformer.checkpoint import BUNDLED_MODELS, resolve_checkpoint  # noqa: F401 (re-exported)
from referformer.models.compiling import compile_model
from referformer.text import find_tokenizer, normalize_sentence

DEFAULT_WINDOW = 36  # frames per clip, as the original inference_davis.py

def _config_differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    ignored = {"tokenizer", "attn_implementation", "train_backbone"}  # not part of the weights
    out = []
    for key in sorted(set(expected) | set(found)):
        if key in ignored:
            continue
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {b!r} (preset: {a!r})")
    return out


def load_checkpoint_model(path: Path, preset: str | None = None, unsafe_load: bool = False) -> nn.Module:
    """A model (eval mode, CPU) from a converted folder or an official ``.pth``.

    With ``preset``, a converted folder must hold that architecture and an official file must
    load into it; otherwise ``CheckpointMismatchError`` says what differs.
    """
    from referformer.checkpoint import from_pretrained
    from referformer.inference.api import load_model
    from referformer.presets import get_preset

    if path.is_dir():
        model = from_pretrained(path)
        if preset is not None:
            diffs = _config_differences(get_preset(preset).config.to_dict(), model.config.to_dict())
            if diffs:
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not match preset {preset!r}: it has {', '.join(diffs[:4])}; "
                    "drop --preset (a converted folder knows its architecture) or pick the matching preset")
        return model
    return load_model(path, preset=preset, unsafe_load=unsafe_load)


def _check_tokenizer(tokenizer: Any, model: nn.Module, where: str) -> None:
    vocab = model.config.text_encoder.vocab_size
    size = len(tokenizer)
    if size > vocab:
        raise UserError(f"tokenizer {where} has {size} tokens but the model's text encoder only {vocab}: "
                        "pass the tokenizer the checkpoint was trained with (--tokenizer DIR)")


@dataclass
class QueryChoice:
    """The query chosen for one sentence over the whole video.

    query: index of the query; score: its mean score over all frames (sigmoid, max over classes),
    in [0, 1]; query_scores: float ``[Q]``, every query's mean score.
    """

    query: int
    score: float
    query_scores: np.ndarray


@dataclass
class WindowCorrection:
    """New results of one sentence on one window whose provisional query was not the final one.

    window_index: 0-based window number; start: position of its first frame among all frames;
    names: its frame names; sentence: 0-based sentence index; result: the results of the final query.
    """

    window_index: int
    start: int
    names: list[str]
    sentence: int
    result: SentenceWindowResult


@dataclass
class _WindowRecord:
    start: int
    names: list[str]
    provisional: list[int]  # query written for each sentence
    spill: Path | None = None


class SegmentationStream:
    """Segments a video window by window for fixed sentences (build with :meth:`Predictor.stream`).

    ``process(window)`` returns provisional results (the best query so far); after the last
    window, ``finish()`` returns the final query of each sentence and ``corrections()`` yields
    the windows to rewrite. Use as a context manager: ``close()`` removes the spilled logits.
    """

    def __init__(self, predictor: Predictor, sentences: Sequence[str], spill_dir: str | Path | None = None,
                 spill_dtype: torch.dtype = torch.float16) -> None:
        if spill_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"spill_dtype must be torch.float16 or torch.float32, got {spill_dtype}")
        self.predictor = predictor
        self.sentences = list(sentences)
        self.text = predictor.encode_sentences(self.sentences)
        self.spill_dtype = spill_dtype
        self._spill_parent = None if spill_dir is None else Path(spill_dir)
        self._spill_dir: Path | None = None
        n = len(self.sentences)
        self._probs: list[list[Tensor]] = [[] for _ in range(n)]  # per window [T, Q, K] sigmoid scores
        self._boxes: list[list[Tensor]] = [[] for _ in range(n)]  # per window [T, Q, 4] cxcywh, normalised
        self._windows: list[_WindowRecord] = []
        self._pending: tuple[_WindowRecord, np.ndarray] | None = None  # last window's logits, not spilled yet
        self._orig_size: tuple[int, int] | None = None
        self._choices: list[QueryChoice] | None = None

    # --- per window --------------------------------------------------------------------------
    def process(self, window: FrameWindow) -> list[SentenceWindowResult]:
        """Segment one window (RGB ``uint8`` frames ``[T, H, W, 3]``) for every sentence; returns one
        provisional result per sentence (masks ``[T, H, W]`` at the original size)."""
        if self._choices is not None:
            raise RuntimeError("finish() was called: this stream takes no more windows")
        p = self.predictor
        clip, orig_size = preprocess_frames(window.images, short_side=p.short_side, max_size=p.max_size)
        if self._orig_size is not None and orig_size != self._orig_size:
            raise UserError(f"window at frame {window.start} is {orig_size[1]}x{orig_size[0]} but earlier frames "
                            f"are {self._orig_size[1]}x{self._orig_size[0]}; all frames must have one size")
        self._orig_size = orig_size
        t = clip.shape[0]
        logits_all: list[Tensor | None] = [None] * len(self.sentences)
        outputs: list[tuple[Tensor, Tensor, Tensor] | None] = [None] * len(self.sentences)
        with torch.inference_mode(), autocast(p.device, p.dtype):
            visual = p.model.encode_video(clip.to(p.device)[None])
            for indices, text in self.text:
                out = p.model.decode(visual, text)
                for j, i in enumerate(indices):
                    logits = out["pred_logits"][j].float()  # [T, Q, K]
                    outputs[i] = (logits, out["pred_boxes"][j].float(), out["pred_masks"][j].float())
                    logits_all[i] = logits
            del visual
            record = _WindowRecord(window.start, list(window.names), [])
            results = []
            for i, output in enumerate(outputs):
                assert output is not None
                logits, boxes, mask_logits = output
                probs = logits.sigmoid()
                self._probs[i].append(probs.cpu())
                self._boxes[i].append(boxes.cpu())
                scores = torch.cat(self._probs[i]).mean(0).max(-1).values  # [Q] over all frames so far
                query = int(scores.argmax(-1))
                record.provisional.append(query)
                masks = self._masks(mask_logits[torch.arange(t), query])
                results.append(self._result(i, len(self._windows), query, float(scores[query]), masks))
            spill = torch.stack([o[2] for o in outputs if o is not None]).to(self.spill_dtype).cpu().numpy()
        self._spill_pending()
        self._pending = (record, spill)  # [S, T, Q, h, w]; kept in memory until the next window
        self._windows.append(record)
        return results

    def _masks(self, mask_logits: Tensor) -> np.ndarray:
        """[T, h, w] stride-4 logits of one query -> bool [T, H, W]: ``postprocess_clip``'s operations."""
        assert self._orig_size is not None
        upsampled = upsample_mask_logits(mask_logits.float(), self._orig_size)
        return (upsampled.sigmoid() > self.predictor.threshold).cpu().numpy()

    def _result(self, sentence: int, window_index: int, query: int, score: float,
                masks: np.ndarray) -> SentenceWindowResult:
        assert self._orig_size is not None
        probs, boxes = self._probs[sentence][window_index], self._boxes[sentence][window_index]
        return SentenceWindowResult(
            query=query, score=score, masks=masks,
            boxes_xyxy=cxcywh_to_xyxy_pixels(boxes[:, query], self._orig_size).double().numpy(),
            frame_scores=probs[:, query].max(-1).values.double().numpy())

    def _spill_pending(self) -> None:
        if self._pending is None:
            return
        record, logits = self._pending
        if self._spill_dir is None:
            if self._spill_parent is not None:
                self._spill_parent.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=self._spill_parent))
        record.spill = self._spill_dir / f"window{len(self._windows) - 1:06d}.npy"
        np.save(record.spill, logits)
        self._pending = None

    # --- at the end --------------------------------------------------------------------------
    def finish(self) -> list[QueryChoice]:
        """The final query of each sentence: argmax over ALL frames of the mean score (as the
        original does inside its clip); its score is that mean."""
        if self._choices is None:
            if not self._windows:
                raise UserError("the video has no frames to segment")
            self._choices = []
            for probs in self._probs:
                scores = torch.cat(probs).mean(0).max(-1).values
                query = int(scores.argmax(-1))
                self._choices.append(QueryChoice(query, float(scores[query]), scores.double().numpy()))
        return self._choices

    def corrections(self) -> Iterator[WindowCorrection]:
        """Results of the final query for every (window, sentence) written with another query,
        recomputed from the spilled logits (upsampled and thresholded like ``postprocess_clip``)."""
        choices = self.finish()
        for w, record in enumerate(self._windows):
            stale = [i for i, c in enumerate(choices) if record.provisional[i] != c.query]
            if not stale:
                continue
            if self._pending is not None and self._pending[0] is record:
                logits = self._pending[1]
            else:
                assert record.spill is not None
                logits = np.load(record.spill, mmap_mode="r")
            for i in stale:
                query = choices[i].query
                mask_logits = torch.from_numpy(np.ascontiguousarray(logits[i, :, query])).to(self.predictor.device)
                result = self._result(i, w, query, choices[i].score, self._masks(mask_logits))
                yield WindowCorrection(w, record.start, record.names, i, result)
            del logits

    def close(self) -> None:
        """Remove the spilled logits (idempotent)."""
        self._pending = None
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None

    def __enter__(self) -> SegmentationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Predictor:
    """A model, its tokenizer, a device and a precision, ready to segment videos.

    Args:
        model: a ``ReferFormer`` or a ``RefVOS`` (moved to ``device`` and put in eval mode here; RefVOS
            answers through its one-query view: query 0, masks at the input size).
        tokenizer: a loaded (fast) RoBERTa-compatible tokenizer.
        device, dtype: where and in what precision to run (``"auto"``/``"fp32"`` names accepted).
        short_side, max_size: frame resizing (the original: short side 360, no cap).
        threshold: mask threshold on the sigmoid (0.5 as the original).
        sentence_batch_size: sentences decoded together (more = faster on a GPU, more memory).
        compile: ``torch.compile`` the model's heavy parts (:func:`referformer.models.compile_model`);
            off by default: the first window of each new size compiles for minutes.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", *, short_side: int = 360, max_size: int | None = None,
                 threshold: float = 0.5, sentence_batch_size: int = 8, compile: bool = False) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model)
        self.tokenizer = tokenizer
        self.short_side, self.max_size, self.threshold = short_side, max_size, threshold
        if sentence_batch_size < 1:
            raise UserError(f"sentence_batch_size must be at least 1, got {sentence_batch_size}")
        self.sentence_batch_size = sentence_batch_size
        _check_tokenizer(tokenizer, model, "given")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, preset: str | None = None, tokenizer: Any = None,
                        device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32",
                        *, unsafe_load: bool = False, **options: Any) -> Predictor:
        """Load a converted model folder, an official ``.pth`` (architecture from ``preset`` or
        inferred) or a bundled model by name. ``tokenizer``: a folder or a loaded tokenizer; by
        default one saved with the checkpoint, else ``roberta-base`` from the offline cache.
        ``options``: see the class arguments."""
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        path = resolve_checkpoint(name_or_path)
        model = load_checkpoint_model(path, preset, unsafe_load=unsafe_load)
        tok = find_tokenizer(tokenizer, path, model.config.text_encoder.tokenizer)
        _check_tokenizer(tok, model, str(tokenizer or path))
        return cls(model, tok, device, dtype, **options)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, preset: str | None = None, tokenizer: Any = None,
                        device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32",
                        **options: Any) -> Predictor:
        """Same as :meth:`from_pretrained` (the name the CLI uses)."""
        return cls.from_pretrained(checkpoint, preset=preset, tokenizer=tokenizer, device=device, dtype=dtype,
                                   **options)

    # --- text --------------------------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        """Longest tokenised sentence (special tokens included) the text encoder accepts (512 for
        RoBERTa-base and for RefVOS's BERT-base; the text config knows how its model counts positions)."""
        return self.model.config.text_encoder.max_tokens

    def encode_sentences(self, sentences: Sequence[str]) -> list[tuple[list[int], Any]]:
        """Tokenise and encode the sentences once: ``[(sentence indices, TextFeatures)]`` per batch.

        Sentences are normalised like the original (lower case, collapsed whitespace). A sentence
        longer than :attr:`max_tokens` is refused (``UserError``) rather than truncated. Batches
        group sentences of equal token length where possible (padding changes numerics slightly).
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        if not sentences:
            raise UserError("no sentence given; pass at least one referring expression")
        texts = [normalize_sentence(s) for s in sentences]
        ids = []
        for i, text in enumerate(texts):
            if not text:
                raise UserError(f"sentence {i + 1} is empty: describe the object, e.g. 'the dog'")
            encoded = self.tokenizer(text)["input_ids"]
            if len(encoded) > self.max_tokens:
                raise UserError(f"sentence {i + 1} is {len(encoded)} tokens long but the text encoder accepts at "
                                f"most {self.max_tokens}: shorten it ({text[:40]!r}...)")
            ids.append(encoded)
        order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), i))
        pad = self.tokenizer.pad_token_id
        batches = []
        with torch.inference_mode(), autocast(self.device, self.dtype):
            for b in range(0, len(order), self.sentence_batch_size):
                indices = order[b:b + self.sentence_batch_size]
                length = max(len(ids[i]) for i in indices)
                input_ids = torch.full((len(indices), length), pad, dtype=torch.long)
                attention = torch.zeros((len(indices), length), dtype=torch.long)
                for row, i in enumerate(indices):
                    input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                    attention[row, :len(ids[i])] = 1
                text = self.model.encode_text(input_ids.to(self.device), attention.to(self.device))
                batches.append((indices, text))
        return batches

    # --- videos ------------------------------------------------------------------------------
    def stream(self, sentences: Sequence[str], *, spill_dir: str | Path | None = None,
               spill_dtype: torch.dtype = torch.float16) -> SegmentationStream:
        """A :class:`SegmentationStream` for ``sentences``; spilled mask logits go to a temporary
        folder inside ``spill_dir`` (default: the system's temporary folder)."""
        return SegmentationStream(self, sentences, spill_dir=spill_dir, spill_dtype=spill_dtype)

    def predict(self, source: str | Path | FrameSource | FramesInput, sentences: str | Sequence[str], *,
                window: int = DEFAULT_WINDOW, spill_dtype: torch.dtype = torch.float16,
                progress: bool = False) -> list[SentencePrediction]:
        """Segment every sentence in every frame of ``source``.

        source: a video / GIF / image / frame-folder path (read with ``video_io``), a ``FrameSource``,
        or frames in memory (list of PIL images or HxWx3 arrays, a [T, H, W, 3] array). Returns one
        :class:`SentencePrediction` per sentence (masks bool [T, H, W] at the original size, boxes
        [T, 4] xyxy pixels, scores [T], query, query_scores [Q]). All masks are returned in memory:
        for long videos write them to disk with ``referformer segment`` / ``segment_to_folder``.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        per_window: list[list[SentenceWindowResult]] = []
        from tqdm import tqdm

        with self.stream(sentences, spill_dtype=spill_dtype) as stream:
            for frame_window in tqdm(_windows_of(source, window), unit="window", disable=not progress):
                per_window.append(stream.process(frame_window))
            choices = stream.finish()
            for fix in stream.corrections():
                per_window[fix.window_index][fix.sentence] = fix.result
        out = []
        for i, sentence in enumerate(sentences):
            parts = [w[i] for w in per_window]
            out.append(SentencePrediction(
                sentence=normalize_sentence(sentence),
                masks=torch.from_numpy(np.concatenate([p.masks for p in parts])),
                boxes=torch.from_numpy(np.concatenate([p.boxes_xyxy for p in parts])).float(),
                scores=torch.from_numpy(np.concatenate([p.frame_scores for p in parts])).float(),
                query=choices[i].query, query_scores=torch.from_numpy(choices[i].query_scores).float()))
        return out


def _windows_of(source: str | Path | FrameSource | FramesInput, size: int) -> Iterator[FrameWindow]:
    if size < 1:
        raise UserError(f"window must be at least 1 frame, got {size}")
    if isinstance(source, FrameSource):
        return source.windows(size)
    if isinstance(source, (str, Path)):
        return open_source(source).windows(size)
    images = load_frames(source)
    frames: Iterable[Frame] = (Frame(t, f"{t:05d}", np.asarray(im)) for t, im in enumerate(images))
    return iter_windows(frames, size)
