"""The HTTP side: Sandbox Fusion's ``POST /run_code`` on the standard library's threading server.

One thread per connection reads and validates the request (``api.parse_run_request``), waits
for a free worker slot (``Sandbox.run``; at most ``limits.workers`` runs at once, at most
``limits.max_waiting`` requests waiting, 503 beyond), and answers JSON. Every failure of a
request is answered (4xx for the client's mistakes, 500 for ours) and logged; nothing a
request or its code does stops the server. Endpoints::

    POST /run_code   run code (see api.py for the fields)
    GET  /v1/ping    "pong", as Sandbox Fusion answers
    GET  /  /health  {"status": "ok", "workers", "busy", "waiting", "isolation", "limits"}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spo_helpers.sandbox.api import (
    SUPPORTED_LANGUAGES,
    RequestError,
    parse_run_request,
    response_body,
    unsupported_language_body,
)
from spo_helpers.sandbox.jail import Sandbox

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 60.0  # a client that sends nothing for this long is dropped


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one ``Sandbox``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox):
        self.sandbox = sandbox
        self._lock = threading.Lock()
        self._waiting = 0
        self.started = time.time()
        self.runs = 0
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def admit(self) -> bool:
        """Count a request in, unless too many already wait for a slot."""
        with self._lock:
            if self._waiting >= self.sandbox.limits.max_waiting + self.sandbox.limits.workers:
                return False
            self._waiting += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._waiting -= 1
            self.runs += 1

    def health(self) -> dict[str, Any]:
        busy = self.sandbox.busy()
        return {
            "status": "ok",
            "languages": list(SUPPORTED_LANGUAGES),
            "workers": self.sandbox.limits.workers,
            "busy": busy,
            "waiting": max(0, self._waiting - busy),
            "runs": self.runs,
            "uptime_s": round(time.time() - self.started, 1),
            "isolation": self.sandbox.isolation.as_dict(),
            "limits": dataclasses.asdict(self.sandbox.limits),
        }


class _Handler(BaseHTTPRequestHandler):
    server: SandboxHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "spo-sandbox/1"
    timeout = READ_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def do_GET(self) -> None:
        path = self._path()
        if path == "/v1/ping":
            self._send(200, "pong")
        elif path in ("/", "/health"):
            self._send(200, self.server.health())
        elif path == "/run_code":
            self._send(405, {"detail": "Method Not Allowed"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        try:
            self._post()
        except RequestError as err:
            self._refuse(err)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client %s went away", self.address_string())
        except Exception:
            logger.exception("internal error on %s %s", self.command, self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(500, {"detail": "internal sandbox server error (see the server log)"})

    def _refuse(self, err: RequestError) -> None:
        logger.info("refused %s %s: %d %s", self.command, self.path, err.status, str(err)[:300])
        self.close_connection = err.status in (400, 408, 411, 413) or self.close_connection
        self._send(err.status, {"detail": err.detail})

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "chunked bodies are not supported: send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(411, "Content-Length required")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length_text!r}") from None
        limit = self.server.sandbox.limits.max_body_bytes
        if length < 0 or length > limit:
            raise RequestError(413, f"request body of {length} bytes is over the limit of {limit} bytes")
        return self._read_body(length)

    def _read_body(self, length: int) -> bytes:
        """Exactly ``length`` bytes within ``READ_TIMEOUT_S`` in all (a client trickling bytes cannot hold a
        worker longer): 400 when the client ends the body early, 408 when time runs out."""
        deadline = time.monotonic() + READ_TIMEOUT_S
        chunks, received = [], 0
        while received < length:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError(408, f"the request body did not arrive in {READ_TIMEOUT_S:g} s")
            self.connection.settimeout(left)
            try:
                chunk = self.rfile.read1(min(length - received, 1 << 16))
            except TimeoutError:
                raise RequestError(408, f"the request body did not arrive in {READ_TIMEOUT_S:g} s") from None
            if not chunk:
                raise RequestError(400, f"the body ended after {received} of its {length} bytes (Content-Length)")
            chunks.append(chunk)
            received += len(chunk)
        self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _post(self) -> None:
        if self._path() != "/run_code":
            body_left = self.headers.get("Content-Length")
            self.close_connection = body_left not in (None, "0")
            self._send(404, {"detail": "Not Found"})
            return
        body = self._body()
        sandbox = self.server.sandbox
        request = parse_run_request(body, max_file_bytes=sandbox.limits.tmpfs_mb * 1024 * 1024)
        if request.language not in SUPPORTED_LANGUAGES:
            self._send(200, unsupported_language_body(request.language))
            return
        if not self.server.admit():
            self.close_connection = True
            self._send(503, {"detail": "too many requests waiting for a sandbox worker; retry later"})
            return
        try:
            record = sandbox.run(request)
        finally:
            self.server.leave()
        logger.debug(
            "run: %s rc=%s %.3fs out=%dB err=%dB%s%s",
            record.status,
            record.return_code,
            record.execution_time or 0.0,
            len(record.stdout),
            len(record.stderr),
            " (output truncated)" if record.stdout_truncated or record.stderr_truncated else "",
            " (OOM kill)" if record.oom_killed else "",
        )
        self._send(200, response_body(record))

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._send(int(HTTPStatus.METHOD_NOT_ALLOWED), {"detail": "Method Not Allowed"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


def make_server(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8080) -> SandboxHTTPServer:
    """Bind (port 0: any free port) without serving yet; call ``serve_forever`` on the result."""
    return SandboxHTTPServer((host, port), sandbox)


class BackgroundServer:
    """A server answering on a daemon thread of this process, until ``stop``."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0):
        self.sandbox = sandbox
        self.httpd = make_server(sandbox, host, port)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="spo-sandbox-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.httpd.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
