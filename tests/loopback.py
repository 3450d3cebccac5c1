"""A loopback HTTP server (127.0.0.1 only) for download and dataset-fixture tests: per-path routes that can
serve data whole, with Range resumes, corrupted, cut halfway, or as an error status."""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def corrupted(data: bytes) -> bytes:
    """The bytes a corrupting route serves: the first 64 flipped."""
    return bytes(b ^ 0xFF for b in data[:64]) + data[64:]


@dataclass
class Route:
    """What the server answers for one path."""

    data: bytes
    corrupt: bool = False  # serve the data with flipped bytes
    ignore_range: bool = False  # always answer 200 with the whole body
    cut: int = 0  # this many next responses close the connection after half of their body
    status: int | None = None  # answer every request with this error status


@dataclass
class Server:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


class _Handler(http.server.BaseHTTPRequestHandler):
    state: Server

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        state = self.state
        header = self.headers.get("Range")
        state.requests.append((self.path, header))
        route = state.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if route.status is not None:
            self.send_error(route.status)
            return
        data = route.data
        if route.corrupt:
            data = corrupted(data)
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and not route.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if route.cut > 0:  # announce the full length, send half, hang up
            route.cut -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serving() -> Iterator[Server]:
    """Run a :class:`Server` on a free 127.0.0.1 port for the duration of the block."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = Server(port=httpd.server_address[1])
    httpd.RequestHandlerClass = type("Handler", (_Handler,), {"state": state})
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def serve_files(server: Server, files: dict[str, Path] | list[Path], prefix: str = "/") -> dict[str, str]:
    """Add a route per file (served under ``prefix + name``); returns name -> URL."""
    items = files.items() if isinstance(files, dict) else ((p.name, p) for p in files)
    urls = {}
    for name, path in items:
        server.routes[prefix + name] = Route(Path(path).read_bytes())
        urls[name] = server.url(prefix + name)
    return urls
