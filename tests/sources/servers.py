"""Small local servers for the source tests, each with a request log the tests read.

* :class:`RangeFileServer`: an HTTP file server with what Python's ``http.server`` lacks: Range
  requests, a strong ETag, If-Match, HEAD, and Bearer or Basic authentication.
* :class:`LoggingProxy`: a reverse proxy in front of an object-store emulator (moto, Azurite,
  fake-gcs-server), which do not log request headers, so a test can see the Range of each GET.
* :class:`TokenServer`: an OAuth token endpoint, so a real service-account key (signed JWT
  exchanged for a token) is used against the GCS emulator, which has no token endpoint.

Every server lives in the node's network namespace (``tests.netns``), where pods reach it.
Both the file server and the proxy can throttle their responses (``bytes_per_second``, changed
at any time), which makes "kill the worker mid-file" deterministic on a fast machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tests.netns import in_node_netns, node_ip

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: bool
    status: int


@dataclass
class _Base:
    bytes_per_second: float | None = None
    log: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{node_ip()}:{self.port}"

    def ranges(self, method: str = "GET") -> list[str | None]:
        return [r.range for r in list(self.log) if r.method == method]

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = in_node_netns(lambda: ThreadingHTTPServer((node_ip(), 0), handler))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def write_throttled(self, out: Any, chunks: Iterator[bytes]) -> None:
        for chunk in chunks:
            out.write(chunk)
            bps = self.bytes_per_second
            if bps:
                time.sleep(len(chunk) / bps)


@dataclass
class RangeFileServer(_Base):
    """Serves the files of ``root``; ``bearer_token`` or ``basic`` (user, password) required."""

    root: Path = Path(".")
    bearer_token: str | None = None
    basic: tuple[str, str] | None = None

    def start(self) -> RangeFileServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._respond(body=False)

            def do_GET(self) -> None:
                self._respond(body=True)

            def _authorized(self) -> bool:
                got = self.headers.get("Authorization", "")
                if outer.bearer_token is not None:
                    return got == f"Bearer {outer.bearer_token}"
                if outer.basic is not None:
                    want = base64.b64encode(":".join(outer.basic).encode()).decode()
                    return got == f"Basic {want}"
                return True

            def _status(self, code: int, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _respond(self, body: bool) -> None:
                rng = self.headers.get("Range")
                status = self._answer(body, rng)
                outer.log.append(
                    Request(self.command, self.path, rng, "Authorization" in self.headers, status)
                )

            def _answer(self, body: bool, rng: str | None) -> int:
                if not self._authorized():
                    self._status(401, {"WWW-Authenticate": 'Bearer realm="files"'})
                    return 401
                path = outer.root / unquote(urlparse(self.path).path).lstrip("/")
                if not path.is_file() or outer.root.resolve() not in path.resolve().parents:
                    self._status(404)
                    return 404
                st = path.stat()
                etag = (
                    '"' + hashlib.sha1(f"{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest() + '"'
                )
                headers = {
                    "ETag": etag,
                    "Accept-Ranges": "bytes",
                    "Last-Modified": self.date_time_string(int(st.st_mtime)),
                    "Content-Type": "text/csv",
                }
                if_match = self.headers.get("If-Match")
                if (
                    if_match
                    and if_match != "*"
                    and etag not in [t.strip() for t in if_match.split(",")]
                ):
                    self._status(412)
                    return 412
                start, end, code = 0, st.st_size - 1, 200
                if rng:
                    m = _RANGE.match(rng)
                    if m is None:
                        self._status(416, {"Content-Range": f"bytes */{st.st_size}"})
                        return 416
                    start = int(m.group(1))
                    end = min(int(m.group(2)), end) if m.group(2) else end
                    if start >= st.st_size:
                        self._status(416, {"Content-Range": f"bytes */{st.st_size}"})
                        return 416
                    code = 206
                    headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if body:
                    # The reader may seek away or be killed mid-body.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        outer.write_throttled(self.wfile, _file_chunks(path, start, end + 1))
                return code

        self._serve(Handler)
        return self


def _file_chunks(path: Path, start: int, stop: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(_BLOCK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


@dataclass
class LoggingProxy(_Base):
    """Forwards every request to ``upstream`` (http://host:port) and logs it."""

    upstream: str = ""

    def start(self) -> LoggingProxy:
        outer = self
        up = urlparse(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    outer.log.append(
                        Request(
                            self.command,
                            self.path,
                            self.headers.get("Range"),
                            "Authorization" in self.headers,
                            resp.status,
                        )
                    )
                    self.send_response_only(resp.status, resp.reason)
                    resp_headers = [
                        (k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP
                    ]
                    known_length = any(k.lower() == "content-length" for k, _ in resp_headers)
                    if known_length or self.command == "HEAD":
                        for k, v in resp_headers:
                            self.send_header(k, v)
                        self.end_headers()
                        if self.command != "HEAD":
                            outer.write_throttled(self.wfile, _response_chunks(resp))
                    else:  # chunked upstream: buffer it (small API answers)
                        data = resp.read()
                        for k, v in resp_headers:
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _forward

        self._serve(Handler)
        return self


def _response_chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        chunk = resp.read(_BLOCK)
        if not chunk:
            return
        yield chunk


@dataclass
class TokenServer(_Base):
    """``POST /token`` answers an access token, as Google's OAuth endpoint does for a JWT grant."""

    access_token: str = "test-access-token"
    grants: list[dict[str, str]] = field(default_factory=list)

    def start(self) -> TokenServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(
                    kv.split("=", 1) for kv in self.rfile.read(length).decode().split("&") if kv
                )
                outer.grants.append(form)
                body = json.dumps(
                    {"access_token": outer.access_token, "expires_in": 3600, "token_type": "Bearer"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)
        return self


def service_account_key(
    token_uri: str, email: str = "ingest@test-project.iam.gserviceaccount.com"
) -> dict[str, str]:
    """A real service-account key (fresh RSA key) whose token endpoint is ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": hashlib.sha1(pem.encode()).hexdigest(),
        "private_key": pem,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
