"""The ``referformer serve`` page: a Gradio Blocks app over :class:`~referformer.web.service.WebService`.

Importing this module imports Gradio (the ``web`` extra: ``pip install "referformer[web]"``); the
``serve`` command imports it only when it runs. The page (docs/web.md):

- inputs: a video (or several frame images; or "Generate a synthetic example", which also fills in
  its expressions), sentences (one per line), the model, and options (window, frame stride, max
  frames);
- outputs: the overlay video, one mask preview per sentence (its chosen query and score), each
  sentence's score over the frames, a zip of the ``segment`` layout and ``results.json``;
- a progress bar (frames done / total) while the model runs; a ``UserError`` becomes a message on
  the page (``gr.Error``), an input cut short a warning (``gr.Warning``), never a traceback.

The API endpoint ``segment`` (``api_name="segment"``) takes (video file, sentences one per line,
model name) and returns (overlay video file, ``results.json`` file). Runs of the page and of the
API share one queue slot (``concurrency_id="segment"``): one model run at a time, each in its own
folder.
"""

from __future__ import annotations

import functools
import html
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from referformer.errors import UserError
from referformer.web.runs import RunOutput, sentence_colour_hex
from referformer.web.service import RunOptions, WebService

log = logging.getLogger(__name__)

MAX_UPLOAD_MB = 200  # uploads above this are refused (``--max-upload-mb``)
DELETE_CACHE = (600, 3600)  # Gradio's cache: every 10 min, delete files older than 1 h
QUEUE_SIZE = 32  # runs waiting at most; later requests are refused with "queue full"
SYNTHETIC_MODEL = "synthetic-tiny"  # the model a synthetic example is meant for, when offered
SCORE_COLUMNS = ["frame", "name", "sentence", "score"]

INTRO = """# ReferFormer: segment what a sentence describes
Upload a video (mp4, mov, avi, webm, mkv, a GIF, an image, or several frame images) or generate a
synthetic example, type one sentence per line, and press **Segment**. Each sentence gets a mask in
every frame. The API endpoint `segment` (see "Use via API" below) does the same from scripts."""


def _text(message: str) -> str:
    """Plain text inside a message the page renders as HTML (quotes kept: API clients read it too)."""
    return html.escape(message, quote=False)


def page_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a ``UserError`` as a message on the page; any other failure as a short one (logged
    with its traceback on the server). The page keeps working either way."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as err:
            raise gr.Error(_text(str(err)), print_exception=False) from None
        except Exception as err:
            log.exception("referformer serve: %s failed", fn.__name__)
            raise gr.Error(f"internal error ({_text(type(err).__name__)}); the server's log has the details",
                           print_exception=False) from None

    return wrapper


def progress_reporter(progress: gr.Progress) -> Callable[[int, int | None], None]:
    """(frames done, total) -> Gradio's progress bar."""

    def report(done: int, total: int | None) -> None:
        progress((done, total), desc="segmenting", unit="frames")

    return report


def score_plot(out: RunOutput) -> gr.LinePlot:
    """Each sentence's score per frame, in its overlay colour."""
    frame = pd.DataFrame(out.scores, columns=SCORE_COLUMNS)
    labels = list(dict.fromkeys(frame["sentence"]))
    return gr.LinePlot(value=frame, color_map={label: sentence_colour_hex(i) for i, label in enumerate(labels)})


def run_summary(out: RunOutput, model: str, seconds: float) -> str:
    """A few lines of Markdown: frames, model, time and, per sentence, its query, score and masks."""
    s = out.summary
    lines = [f"**{s['num_frames']} frames**, model `{model}`, {seconds:.1f} s"
             + ("" if s["complete"] else " (input incomplete)")]
    for i, sentence in enumerate(s["sentences"]):
        score = "n/a" if sentence["score"] is None else f"{sentence['score']:.3f}"
        lines.append(f"- {i}: {_text(sentence['text'])}: query {sentence['query']}, score {score}, "
                     f"mask in {sentence['num_frames_with_mask']}/{sentence['num_frames']} frames")
    return "\n".join(lines)


@dataclass
class WebApp:
    """The Blocks page of a :class:`WebService`; :meth:`launch` serves it."""

    service: WebService
    blocks: gr.Blocks
    max_upload_mb: int = MAX_UPLOAD_MB

    def launch(self, host: str = "127.0.0.1", port: int | None = 7860, *, share: bool = False,
               block: bool = True, quiet: bool = False) -> str:
        """Serve the page at ``host:port`` (``share``: also through a public Gradio link). With
        ``block`` this returns when the server stops (Ctrl-C); else at once. Returns the local URL."""
        self.blocks.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        self.blocks.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                           max_file_size=f"{self.max_upload_mb}mb", ssr_mode=False, show_error=False, quiet=quiet,
                           inbrowser=False)  # no allowed_paths: only the files a run returns are served
        return str(self.blocks.local_url)

    def close(self) -> None:
        """Stop the server and remove every run's folder."""
        self.blocks.close()
        self.service.close()


def build_app(service: WebService, *, max_upload_mb: int = MAX_UPLOAD_MB) -> WebApp:
    """The page and its API endpoint over ``service``."""
    if max_upload_mb < 1:
        raise UserError(f"--max-upload-mb must be at least 1, got {max_upload_mb}")
    catalog = service.catalog

    @page_errors
    def run_page(files: Any, sentences: str, model: str, window: Any, stride: Any, max_frames: Any,
                 progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        start = time.perf_counter()
        out = service.segment(files, sentences, model, RunOptions(window, stride, max_frames),
                              progress_reporter(progress))
        for warning in out.warnings:
            gr.Warning(_text(warning))
        return (str(out.overlay) if out.overlay else None, out.previews, score_plot(out), str(out.archive),
                str(out.results), run_summary(out, model, time.perf_counter() - start))

    @page_errors
    def segment(video: str | None, sentences: str, model: str,
                progress: gr.Progress = gr.Progress()) -> tuple[str | None, str]:
        """Segment what each sentence (one per line) describes in the video, with the model named.
        Returns the overlay video (MP4) and results.json (per sentence: chosen query, score, and per
        frame box, score and RLE mask)."""
        out = service.segment(video, sentences, model, None, progress_reporter(progress))
        return (str(out.overlay) if out.overlay else None, str(out.results))

    @page_errors
    def make_example() -> tuple[Any, ...]:
        example = service.example()
        model = gr.Dropdown(value=SYNTHETIC_MODEL) if SYNTHETIC_MODEL in catalog.names else gr.skip()
        return ([str(example.video)], "\n".join(example.sentences), model,
                f"Synthetic video (seed {example.seed}) with {len(example.sentences)} of its expressions.")

    with gr.Blocks(title="ReferFormer", analytics_enabled=False, delete_cache=DELETE_CACHE) as blocks:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                video = gr.File(label=f"Video, or frames (at most {max_upload_mb} MB)", file_count="multiple",
                                elem_id="video-input")
                example_button = gr.Button("Generate a synthetic example", elem_id="example-button")
                example_note = gr.Markdown(elem_id="example-note")
                sentences = gr.Textbox(label="Sentences, one per line", lines=4, elem_id="sentences",
                                       placeholder="the red circle\nthe square moving to the left")
                model = gr.Dropdown(choices=catalog.choices(), value=catalog.default, label="Model",
                                    elem_id="model")
                with gr.Accordion("Options", open=False):
                    window = gr.Number(label="Window: frames the model sees at once", precision=0,
                                       placeholder="the model's", elem_id="window")
                    stride = gr.Number(value=1, label="Frame stride: keep every k-th frame", precision=0,
                                       elem_id="stride")
                    max_frames = gr.Number(label="Max frames", precision=0, placeholder="all", elem_id="max-frames")
                run_button = gr.Button("Segment", variant="primary", elem_id="run-button")
            with gr.Column():
                overlay = gr.Video(label="Overlay", interactive=False, height=400, elem_id="overlay")
                summary = gr.Markdown(elem_id="run-summary")
                previews = gr.Gallery(label="Mask previews (the frame where each sentence scores highest)",
                                      format="png", columns=3, height="auto", object_fit="contain", interactive=False,
                                      elem_id="previews")
                plot = gr.LinePlot(x="frame", y="score", color="sentence", label="Score per frame",
                                   y_lim=[0, 1], elem_id="scores")
                with gr.Row():
                    archive = gr.File(label="Download: segment layout (zip)", interactive=False, elem_id="download")
                    results = gr.File(label="results.json", interactive=False, elem_id="results-json")
        # the API endpoint: three inputs, two outputs, no options (see docs/web.md)
        with gr.Row(visible=False):
            api_video = gr.File(label="video")
            api_sentences = gr.Textbox(label="sentences")
            api_model = gr.Textbox(label="model", value=catalog.default)
            api_overlay = gr.File(label="overlay")
            api_results = gr.File(label="results")
            api_button = gr.Button("segment")

        example_button.click(make_example, None, [video, sentences, model, example_note], api_visibility="private")
        run_button.click(run_page, [video, sentences, model, window, stride, max_frames],
                         [overlay, previews, plot, archive, results, summary], api_visibility="private",
                         concurrency_limit=1, concurrency_id="segment")
        api_button.click(segment, [api_video, api_sentences, api_model], [api_overlay, api_results],
                         api_name="segment", concurrency_limit=1, concurrency_id="segment")
    return WebApp(service, blocks, max_upload_mb)
