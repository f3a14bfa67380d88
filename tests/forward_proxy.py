"""A small HTTP forward proxy on loopback that relays requests and remembers what it relayed."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Headers that concern one hop only: never relayed.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding"}
)


class ForwardProxy:
    """``with ForwardProxy() as proxy``: ``proxy.url`` to point HTTP_PROXY at; ``proxy.seen``
    lists ``(absolute target URL, User-Agent)`` for each relayed request. An HTTPS request's
    tunnel (``CONNECT host:port``, with HTTPS_PROXY) is refused with 403, its target listed in
    ``proxy.tunnels``: where a call would have gone, without going there."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.tunnels: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.seen.append((self.path, self.headers.get("User-Agent")))
                target = urlsplit(self.path)  # a proxy gets the absolute form
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request("POST", path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
                upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_CONNECT(self) -> None:
                proxy.tunnels.append(self.path)
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
