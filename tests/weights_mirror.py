"""A loopback HTTP mirror for the tests of published-checkpoint downloads (``REFERFORMER_MIRROR``).

``Mirror`` serves ``files[name]`` (bytes or a path) at ``<base_url>/<name>`` from a thread, with
``Range`` / ``If-Range`` (ETag) support for resumed downloads (``ranges = False``: ignored, as
``python -m http.server`` does). ``cut`` makes the next N responses stop halfway (the connection
closes after half of the announced bytes); ``unavailable`` answers the next N requests with a 503;
``delay`` slows every chunk (to make two downloads overlap). Every request is recorded as ``(name, Range header, status)``.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from pathlib import Path


class Mirror:
    def __init__(self) -> None:
        self.files: dict[str, bytes | Path] = {}
        self.requests: list[tuple[str, str | None, int]] = []
        self.cut = 0
        self.unavailable = 0
        self.ranges = True
        self.delay = 0.0
        self._lock = threading.Lock()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                mirror._serve(self)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.running = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def full_gets(self, name: str) -> int:
        """Requests for ``name`` that asked for the whole file."""
        return sum(1 for n, r, status in self.requests if n == name and r is None and status == 200)

    def stop(self) -> None:
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self.running = False

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/")
        range_header = handler.headers.get("Range")
        source = self.files.get(name)
        if source is None:
            self.requests.append((name, range_header, 404))
            handler.send_error(404, "Not Found")
            return
        with self._lock:
            busy = self.unavailable > 0
            self.unavailable -= int(busy)
        if busy:
            self.requests.append((name, range_header, 503))
            handler.send_error(503, "Service Unavailable")
            return
        data = source.read_bytes() if isinstance(source, Path) else source
        etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        start = 0
        match = re.match(r"bytes=(\d+)-$", range_header or "")
        if_range = handler.headers.get("If-Range")
        if self.ranges and match and (if_range is None or if_range == etag):
            start = int(match.group(1))
            if start >= len(data):
                self.requests.append((name, range_header, 416))
                handler.send_error(416, "Range Not Satisfiable")
                return
        status = 206 if start else 200
        self.requests.append((name, range_header, status))
        with self._lock:
            cut = self.cut > 0
            self.cut -= int(cut)
        body = data[start:]
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if cut:
            body = body[: len(body) // 2]
        step = 1 << 16
        try:
            for i in range(0, len(body), step):
                handler.wfile.write(body[i:i + step])
                if self.delay:
                    time.sleep(self.delay)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True
