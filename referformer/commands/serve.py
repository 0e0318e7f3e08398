"""``referformer serve``: a web page to segment your own videos (Gradio), and its API.

    pip install "referformer[web]"
    referformer serve                                   # http://127.0.0.1:7860
    referformer serve --checkpoint models/ytvos-r50 --port 8000

The page takes a video (or frames, or a generated synthetic example), sentences (one per line), a
model and options, and shows the overlay video, one mask preview per sentence, each sentence's score
per frame and a zip of the ``referformer segment`` layout. The API endpoint ``segment`` (video
file, sentences, model name -> overlay video, results.json) serves scripts and ``gradio_client``.
It listens on 127.0.0.1 only unless --host says otherwise; --share (a public Gradio link) only
when asked. See docs/web.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import threading
from typing import Any

from referformer.commands import help_text
from referformer.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 200  # the same as referformer.web.app.MAX_UPLOAD_MB (not imported: that imports Gradio)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a web page (and API) to segment your own videos (needs the web extra)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME_OR_PATH",
                   help="a model to offer: a converted folder, an official .pth or a bundled name; repeat for "
                        "several (the first is the default; bundled models are always offered)")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="also offer the official checkpoints (preset file names) and converted folders found "
                        "here (default: $REFERFORMER_MODELS, else ./models when it exists)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0: the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true",
                   help="also create a public gradio.live link (anyone with it can use the page)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help=f"refuse uploads larger than this (default {DEFAULT_MAX_UPLOAD_MB} MB)")
    p.set_defaults(run=run)


def require_gradio() -> None:
    """``UserError`` naming the extra to install when Gradio is missing."""
    if importlib.util.find_spec("gradio") is None:
        raise UserError('the web page needs Gradio, which the core install leaves out: pip install "referformer[web]"')


def create_app(checkpoints: list[str] | tuple[str, ...] = (), *, models_dir: str | None = None, device: str = "auto",
               max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB) -> Any:
    """The :class:`referformer.web.app.WebApp` of these models (not started: call ``.launch()``).
    Models are checked to exist here; each is loaded by the first run that asks for it."""
    require_gradio()
    from referformer.commands.demo import pick_expressions
    from referformer.commands.segment import segment_to_folder
    from referformer.inference.device import resolve_device  # imports torch
    from referformer.web.app import build_app  # imports Gradio
    from referformer.web.models import ModelCatalog, PredictorCache
    from referformer.web.service import WebService

    catalog = ModelCatalog.discover(checkpoints, models_dir)
    service = WebService(catalog, segment_to_folder, pick_expressions, PredictorCache(str(resolve_device(device))))
    try:
        return build_app(service, max_upload_mb=max_upload_mb)
    except BaseException:
        service.close()
        raise


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    app = create_app(args.checkpoint, models_dir=args.models_dir, device=args.device,
                     max_upload_mb=args.max_upload_mb)
    if args.share:
        print("referformer serve: --share: the page is also public, through a gradio.live link")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)  # `kill`, a service manager: stop as Ctrl-C does, cleaning up
    try:
        app.launch(args.host, args.port, share=args.share, block=True)
    except KeyboardInterrupt:  # stopped while starting (once serving, Gradio takes Ctrl-C itself): a normal stop
        pass
    except OSError as err:  # e.g. the port is taken
        reason = str(err).split(". ")[0]  # Gradio's first sentence, not its advice about launch()
        raise UserError(f"cannot serve on {args.host}:{args.port}: {reason}; pick another --port") from None
    finally:
        app.close()
    return 0
