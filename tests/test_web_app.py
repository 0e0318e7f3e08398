"""``referformer serve``: the page in a real headless browser (Debian's chromium, driven by
Playwright), and the ``segment`` API endpoint through ``gradio_client``.

One server for the module, on a free port, with the bundled model (the default) and a broken model
folder (for the "wrong checkpoint" message). The input is a 10-frame 96x128 synthetic video written
here with PyAV; what the page and the API return is compared with ``referformer segment`` on the
same file. A screenshot of the page after a run is saved under the test's tmp folder and, when
``REFERFORMER_TEST_ARTIFACTS`` is set, there too.

The browser is ``/usr/bin/chromium`` (``REFERFORMER_CHROMIUM`` names another). Without it, or
without the test extra's packages, these tests skip, unless ``REFERFORMER_REQUIRE_BROWSER=1``
(set by ``.ci/run``, which installs chromium), where they fail instead.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from referformer import cli
from referformer.commands.demo import pick_expressions
from referformer.synthetic.scenes import SceneConfig, render_frame
from referformer.synthetic.writer import make_video

CHROMIUM = os.environ.get("REFERFORMER_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("REFERFORMER_REQUIRE_BROWSER", "") not in ("", "0")
MAX_UPLOAD_MB = 1
SEED = 11
TIMEOUT_MS = 90_000


def _need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(f"{module} is not installed (pip install '.[test]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _save_artifact(path: Path) -> None:
    folder = os.environ.get("REFERFORMER_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


# --- the input and what `referformer segment` makes of it ------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 10-frame 96x128 synthetic video (H.264 MP4 written with PyAV) and two of its expressions."""
    video = make_video(SEED, "demo", 0, SceneConfig(height=96, width=128, num_frames=10))
    path = tmp_path_factory.mktemp("input") / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for t in range(len(video.frame_names)):
            frame = av.VideoFrame.from_ndarray(render_frame(video.scene, t)[0], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path, [e.text for e in pick_expressions(video.expressions, 2)]


@pytest.fixture(scope="module")
def reference(clip: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``referformer segment`` on the clip with the two sentences (the bundled model, on the CPU)."""
    path, sentences = clip
    out = tmp_path_factory.mktemp("reference") / "out"
    args = ["segment", str(path), "--checkpoint", "synthetic-tiny", "--device", "cpu", "--out", str(out), "--quiet"]
    for sentence in sentences:
        args += ["-t", sentence]
    assert cli.main(args) == 0
    return out


def assert_same_segmentation(results: dict[str, Any], masks: dict[str, np.ndarray], reference: Path) -> None:
    """``results`` (results.json) and ``masks`` (relative PNG path -> array) are those of ``reference``."""
    expected = json.loads((reference / "results.json").read_text())
    assert results["num_frames"] == expected["num_frames"] == 10
    for got, want in zip(results["sentences"], expected["sentences"], strict=True):
        assert (got["text"], got["query"], got["mask_dir"]) == (want["text"], want["query"], want["mask_dir"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        assert [f["mask_rle"] for f in got["frames"]] == [f["mask_rle"] for f in want["frames"]]
    if masks:
        pngs = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*.png"))
        assert sorted(masks) == pngs and len(pngs) == 20
        for name in pngs:
            np.testing.assert_array_equal(masks[name], np.asarray(Image.open(reference / name)), err_msg=name)


# --- the server and the browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The app of ``referformer serve --checkpoint synthetic-tiny --models-dir DIR`` (DIR holds a
    broken model folder) on a free port of 127.0.0.1; its run folders are gone once it stops."""
    _need("gradio")
    from referformer.commands.serve import create_app

    models = tmp_path_factory.mktemp("models")
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text('{"model_type": "referformer", "config": {"hidden_dim": "x"}}')
    (models / "broken" / "model.safetensors").write_bytes(b"not safetensors")
    app = create_app(["synthetic-tiny"], models_dir=str(models), device="cpu", max_upload_mb=MAX_UPLOAD_MB)
    url = app.launch("127.0.0.1", _free_port(), block=False, quiet=True)
    yield app, url
    root = app.service.folders.root
    app.close()
    assert not root.exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = _need("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        message = f"no chromium at {CHROMIUM} (apt-get install chromium, or set REFERFORMER_CHROMIUM)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(server: tuple[Any, str], browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[1])
    page.wait_for_selector("#run-button")
    yield page
    context.close()


def upload(page: Any, path: Path) -> None:
    """Upload ``path`` as the video and wait until the page holds it."""
    page.set_input_files("#video-input input[type=file]", str(path))
    page.wait_for_selector(f'#video-input [data-testid="download-link"][download="{path.name}"]')


def expect_message(page: Any, text: str) -> None:
    """An error message containing ``text`` shows on the page (then it is closed)."""
    message = page.locator('[data-testid="toast-text"]', has_text=text)
    message.first.wait_for(state="visible")
    for button in page.locator('[data-testid="toast-close"]').all():
        button.click()
    page.wait_for_selector('[data-testid="toast-text"]', state="detached")
    assert "Traceback" not in page.content()


def run_and_wait(page: Any) -> list[str]:
    """Press Segment, wait until the overlay video has loaded; returns the progress texts seen."""
    page.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver(() => {
            for (const el of document.querySelectorAll('[data-testid="status-tracker"]')) {
                const m = el.innerText.match(/\\d+\\/\\d+ frames/);
                if (m && !window.progressSeen.includes(m[0])) window.progressSeen.push(m[0]);
            }
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#run-button")
    page.wait_for_function("""() => {
        const v = document.querySelector('#overlay video');
        return v && v.src && v.readyState >= 1 && v.duration > 0;
    }""", timeout=TIMEOUT_MS)
    return page.evaluate("() => window.progressSeen")


def test_page_segments_an_uploaded_video_as_segment_does(page: Any, clip: tuple[Path, list[str]], reference: Path,
                                                         tmp_path: Path) -> None:
    path, sentences = clip
    upload(page, path)
    page.fill("#sentences textarea", "\n".join(sentences))
    progress = run_and_wait(page)
    assert progress and progress[-1] == "10/10 frames"  # gr.Progress: frames done / total

    previews = page.locator("#previews .gallery-item")
    previews.first.wait_for()
    assert previews.count() == 2
    captions = page.locator("#previews .caption-label").all_inner_texts()
    expected = json.loads((reference / "results.json").read_text())["sentences"]
    for i, (caption, sentence) in enumerate(zip(captions, expected)):
        assert caption.startswith(f"{i}: {sentence['text']} (query {sentence['query']}, score {sentence['score']:.3f}")
    assert page.locator("#previews img").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    page.wait_for_selector("#scores .vega-embed")  # the score plot
    assert "10 frames" in page.inner_text("#run-summary")

    with page.expect_download() as download:
        page.click('#download [data-testid="download-link"]')
    archive = tmp_path / "page.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert {"results.json", "overlay.mp4"} <= set(names)
        results = json.loads(zf.read("results.json"))
        masks = {n: np.asarray(Image.open(zf.open(n))) for n in names if n.endswith(".png")}
    assert_same_segmentation(results, masks, reference)

    screenshot = tmp_path / "referformer-serve-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    _save_artifact(screenshot)


def test_bad_inputs_show_messages_and_the_page_keeps_working(page: Any, clip: tuple[Path, list[str]],
                                                            tmp_path: Path) -> None:
    # a file above the upload limit is refused before it is sent
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 1024))
    page.set_input_files("#video-input input[type=file]", str(big))
    expect_message(page, "exceed the maximum allowed size")
    # no video
    page.fill("#sentences textarea", "the red circle")
    page.click("#run-button")
    expect_message(page, "no video: upload a video")
    # a text file as the video
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    upload(page, notes)
    page.click("#run-button")
    expect_message(page, "notes.txt")
    # an empty sentence
    page.click('#video-input button[aria-label="Clear"]')
    upload(page, clip[0])
    page.fill("#sentences textarea", "  \n ")
    page.click("#run-button")
    expect_message(page, "the sentence is empty")
    # then a valid run, on a generated synthetic example (which fills in the video and its sentences)
    page.click("#example-button")
    page.wait_for_selector('#video-input [data-testid="download-link"][download^="synthetic-"]')
    sentences = page.input_value("#sentences textarea").splitlines()
    assert len(sentences) == 3 and all(s.strip() for s in sentences)
    run_and_wait(page)
    page.locator("#previews .gallery-item").nth(2).wait_for()
    assert page.locator("#previews .gallery-item").count() == 3


# --- the API: gradio_client and the `segment` endpoint ----------------------------------------
@pytest.fixture(scope="module")
def client(server: tuple[Any, str]) -> Any:
    gradio_client = _need("gradio_client")
    return gradio_client.Client(server[1], verbose=False)


def test_segment_endpoint_through_gradio_client(client: Any, clip: tuple[Path, list[str]], reference: Path) -> None:
    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")
    assert "/segment" in api["named_endpoints"]
    assert len(api["named_endpoints"]["/segment"]["parameters"]) == 3
    assert len(api["named_endpoints"]["/segment"]["returns"]) == 2

    path, sentences = clip
    overlay, results_path = client.predict(handle_file(str(path)), "\n".join(sentences), "synthetic-tiny",
                                           api_name="/segment")
    assert_same_segmentation(json.loads(Path(results_path).read_text()), {}, reference)
    with av.open(overlay) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_two_clients_at_once_get_their_own_results(client: Any, server: tuple[Any, str],
                                                   clip: tuple[Path, list[str]]) -> None:
    from gradio_client import handle_file

    path, sentences = clip
    requests = [sentences[:1], [sentences[1], "the biggest object"]]
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(client.predict, handle_file(str(path)), "\n".join(r), "synthetic-tiny",
                            api_name="/segment") for r in requests]
        outputs = [job.result(timeout=TIMEOUT_MS / 1000) for job in jobs]
    for request, (overlay, results_path) in zip(requests, outputs):
        results = json.loads(Path(results_path).read_text())
        assert [s["text"] for s in results["sentences"]] == request
    assert outputs[0][1] != outputs[1][1]
    runs = [p for p in server[0].service.folders.root.iterdir() if p.name.startswith("run-")]
    assert len(runs) >= 2 and all(p.parent == server[0].service.folders.root for p in runs)


def test_api_errors_are_messages(client: Any, clip: tuple[Path, list[str]], tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    cases = [
        ((handle_file(str(clip[0])), "the dog", "no-such-model"), "unknown model 'no-such-model': choose one of"),
        ((handle_file(str(clip[0])), "the dog", "broken"), "broken"),
        ((handle_file(str(notes)), "the dog", "synthetic-tiny"), "notes.txt"),
        ((handle_file(str(clip[0])), "\n", "synthetic-tiny"), "the sentence is empty"),
    ]
    for inputs, message in cases:
        with pytest.raises(AppError, match=message) as err:
            client.predict(*inputs, api_name="/segment")
        assert "Traceback" not in str(err.value)


def test_uploads_above_the_limit_are_refused(server: tuple[Any, str], tmp_path: Path) -> None:
    import httpx

    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 1024))
    with big.open("rb") as f:
        response = httpx.post(f"{server[1]}gradio_api/upload", files={"files": ("big.mp4", f)}, timeout=60)
    assert response.status_code == 413


def test_serve_command_listens_on_localhost_and_cleans_up_when_stopped(tmp_path: Path) -> None:
    """`referformer serve --port P` as a process: the page answers on 127.0.0.1:P; SIGTERM stops it
    as Ctrl-C does, exit status 0, its run folder removed."""
    httpx = _need("httpx")
    _need("gradio")
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    process = subprocess.Popen([sys.executable, "-m", "referformer", "serve", "--port", str(port), "--device", "cpu"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 2 minutes"
            time.sleep(0.5)
        assert len(list(tmp_path.glob("referformer-serve-*"))) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert not list(tmp_path.glob("referformer-serve-*"))
