"""A real HTTP server on 127.0.0.1 serving what a test sets, recording what it is asked:
the place a contributor hosts its result, as the creator's pull sees it."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Site:
    """What the test server serves at each path: (status, headers, body chunks)."""

    port: int = 0
    routes: dict[str, tuple[int, dict[str, str], list[bytes]]] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@contextlib.contextmanager
def serving() -> Iterator[Site]:
    served = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            served.asked.append((self.path, self.headers.get("Host", "")))
            status, headers, chunks = served.routes.get(self.path, (404, {}, [b"no"]))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            chunked = headers.get("Transfer-Encoding") == "chunked"
            if "Content-Length" not in headers and not chunked:
                self.send_header("Content-Length", str(sum(map(len, chunks))))
            self.end_headers()
            for chunk in chunks:
                if chunked:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
