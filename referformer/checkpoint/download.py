"""Bytes from the network to a file: resumable, atomic, with a progress bar.

A file is fetched from Google Drive with ``gdown`` (which handles Drive's confirmation page), or,
when ``REFERFORMER_MIRROR=<base URL>`` is set, from ``<base URL>/<Google Drive file id>`` over plain
HTTP(S) (a mirror for users behind a firewall, and the loopback server of the tests).

Both write ``<dest>.part``-style files first and rename to ``dest`` only once every byte announced
has arrived, so an interrupted download never leaves a file under the final name. The next attempt
resumes the partial file (HTTP ``Range``, guarded by ``If-Range`` with the server's ETag); a broken
connection is retried :data:`RETRIES` times, resuming each time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from referformer.errors import UserError

MIRROR_VARIABLE = "REFERFORMER_MIRROR"
RETRIES = 3  # further attempts after a broken connection, each resuming where the last stopped
RETRY_WAIT = 1.0  # seconds before the first retry (doubled each time, at most 10)
TIMEOUT = 60.0  # seconds without a byte before a connection counts as broken
CHUNK = 1 << 20


def mirror_url(drive_id: str) -> str | None:
    """``<REFERFORMER_MIRROR>/<drive_id>`` when the variable is set, else None."""
    base = os.environ.get(MIRROR_VARIABLE, "").strip()
    if not base:
        return None
    if not base.startswith(("http://", "https://")):
        raise UserError(f"{MIRROR_VARIABLE}={base!r} is not an http(s) URL; set it to the base URL that serves "
                        "<base>/<google drive file id>, or unset it to download from Google Drive")
    return f"{base.rstrip('/')}/{drive_id}"


def sha256_file(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _progress_bar(desc: str, total: int | None, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only (logs of batch jobs stay clean)
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None if enabled else True, leave=False)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _total_size(response: Any, start: int) -> int | None:
    """Size of the whole file from Content-Range (a 206) or Content-Length (a 200)."""
    match = re.match(r"bytes (\d+)-(\d+)/(\d+)", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(3))
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _open(url: str, have: int, validator: str | None) -> tuple[Any, int | None]:
    """The response for ``url`` from byte ``have`` on, and the offset it really starts at: 0 when
    the server ignored the range or the file changed, None (response closed) when it answered
    another range than the one asked."""
    from referformer import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"referformer/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        if validator:
            request.add_header("If-Range", validator)
    response = urllib.request.urlopen(request, timeout=TIMEOUT)
    if response.status == 206:
        match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if have and match and int(match.group(1)) == have:
            return response, have
        response.close()
        return response, None
    return response, 0


def http_download(url: str, dest: Path, *, desc: str, progress: bool = True, retries: int | None = None) -> None:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when it exists for the same URL).

    Raises ``UserError`` (one line) on an HTTP error status, or when the connection keeps breaking:
    the partial file stays for the next attempt to resume.
    """
    retries = RETRIES if retries is None else retries
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    state_file = dest.with_name(dest.name + ".part.json")
    state = _read_state(state_file)
    if part.exists() and state.get("url") != url:
        part.unlink()  # a partial file of another source: start again
    failures = 0

    def retry_or_raise(message: str, err: Exception | None) -> None:
        """Count a failure; raise ``UserError(message)`` past ``retries``, else wait before the next try."""
        nonlocal failures
        failures += 1
        if failures > retries:
            raise UserError(message) from err
        time.sleep(min(RETRY_WAIT * 2 ** (failures - 1), 10.0))

    while True:
        have = part.stat().st_size if part.exists() else 0
        try:
            response, start = _open(url, have, state.get("validator"))
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the partial file does not fit the file any more
                part.unlink()
                continue
            message = f"downloading {desc} from {url} failed: HTTP {err.code} {err.reason}"
            if err.code < 500:
                raise UserError(message) from err
            retry_or_raise(message, err)
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            retry_or_raise(f"downloading {desc} from {url} failed ({getattr(err, 'reason', err)}); check the "
                           "network (or REFERFORMER_MIRROR) and run it again", err)
            continue
        if start is None:  # not the range asked for: start again from the first byte
            part.unlink(missing_ok=True)
            state = {}
            retry_or_raise(f"downloading {desc} from {url} failed: the server sent another range than asked", None)
            continue
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        state = {"url": url, "validator": validator}
        state_file.write_text(json.dumps(state), encoding="utf-8")
        total = _total_size(response, start)
        received = start
        bar = _progress_bar(desc, total, start, progress)
        try:
            with response, open(part, "ab" if start else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received < total:
                raise http.client.IncompleteRead(b"", total - received)
        except (OSError, http.client.HTTPException) as err:
            retry_or_raise(f"downloading {desc} from {url} was interrupted at {received:,} of {total or '?'} bytes "
                           f"({type(err).__name__}); run the same command again to resume ({part.name} is kept)", err)
            continue
        finally:
            bar.close()
        break
    os.replace(part, dest)
    state_file.unlink(missing_ok=True)


def drive_download(drive_id: str, dest: Path, *, desc: str, progress: bool = True) -> None:
    """Download the Google Drive file ``drive_id`` to ``dest`` with ``gdown`` (resumable, atomic)."""
    try:
        import gdown
    except ImportError as err:
        raise UserError("downloading from Google Drive needs gdown (pip install gdown), or set "
                        f"{MIRROR_VARIABLE} to a mirror") from err
    import inspect

    # gdown writes <dest><random>.part and renames it when complete; resume=True picks such a file up
    retries = {"retries": RETRIES} if "retries" in inspect.signature(gdown.download).parameters else {}  # gdown >= 6
    try:
        gdown.download(id=drive_id, output=str(dest), quiet=not progress, resume=True, **retries)
    except Exception as err:  # gdown and requests raise many kinds; each becomes one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"downloading {desc} from Google Drive (file id {drive_id}) failed: {reason}; run it again "
                        f"to resume (Drive limits the downloads of a popular file per day), or download "
                        f"https://drive.google.com/file/d/{drive_id}/view by hand and install it with "
                        f"`referformer download {desc} --file FILE`") from err
    if not Path(dest).is_file():
        raise UserError(f"downloading {desc} from Google Drive (file id {drive_id}) produced no file")


def fetch(drive_id: str, dest: Path, *, desc: str, progress: bool = True) -> str:
    """Download the file ``drive_id`` to ``dest`` from the mirror when one is set, else from Google
    Drive; returns the URL it came from."""
    url = mirror_url(drive_id)
    if url is not None:
        http_download(url, dest, desc=desc, progress=progress)
        return url
    drive_download(drive_id, dest, desc=desc, progress=progress)
    return f"https://drive.google.com/file/d/{drive_id}/view"
