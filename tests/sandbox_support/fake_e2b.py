"""A local HTTP server that speaks the part of E2B's protocol the code-interpreter SDK uses.

Control plane: POST /v2/sandboxes (create), DELETE /sandboxes/{id} (kill). Data plane (the SDK's sandbox_url):
POST /execute streams one JSON object per line. Code really runs, in toolrl's local sandbox (one stateful
session per E2B sandbox). Knobs for tests: ``fail_next`` makes the next N requests answer 503 (transport
failure), ``created``/``killed`` record the control-plane calls.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from toolrl.sandbox.base import ExecResult
from toolrl.types import ExecKind

from http_support import send_json


class FakeE2B:
    def __init__(self, sandbox: Any, timeout_s: float = 5.0) -> None:
        self.sandbox = sandbox  # a stateful toolrl LocalSandbox
        self.created: list[str] = []
        self.killed: list[str] = []
        self.fail_next = 0
        self.fail_execute = 0  # next N /execute calls answer 503 (the SDK does not retry those itself)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per call

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def _send(self, code: int, payload: object = None) -> None:
                send_json(self, code, payload)

            def _should_fail(self) -> bool:
                with fake.lock:
                    if fake.fail_next > 0:
                        fake.fail_next -= 1
                        return True
                return False

            def do_POST(self) -> None:
                body = self._body()
                if self._should_fail():
                    return self._send(503, {"code": 503, "message": "unavailable"})
                if self.path.rstrip("/") == "/v2/sandboxes":
                    sid = uuid.uuid4().hex[:12]
                    with fake.lock:
                        fake.created.append(sid)
                    return self._send(201, {
                        "templateID": body.get("templateID", "code-interpreter-v1"), "sandboxID": sid,
                        "clientID": "local", "envdVersion": "0.4.0", "envdAccessToken": "token",
                    })
                if self.path.rstrip("/") == "/execute":
                    with fake.lock:
                        fail, fake.fail_execute = fake.fail_execute > 0, max(0, fake.fail_execute - 1)
                    if fail:
                        return self._send(503, {"code": 503, "message": "unavailable"})
                    sid = self.headers.get("E2b-Sandbox-Id", "none")
                    result = fake.sandbox.run(body["code"], timeout_s=timeout_s, session=sid)
                    lines = to_lines(result)
                    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                return self._send(404, {"code": 404, "message": "not found"})

            def do_DELETE(self) -> None:
                if self.path.startswith("/sandboxes/"):
                    sid = self.path.rsplit("/", 1)[-1]
                    with fake.lock:
                        fake.killed.append(sid)
                    fake.sandbox.close_session(sid)
                    return self._send(204)
                return self._send(404, {"code": 404, "message": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeE2B":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def to_lines(r: ExecResult) -> list[dict[str, Any]]:
    """An ExecResult as the code-interpreter's /execute stream (timestamps are required by the SDK)."""
    ts = datetime.now(timezone.utc).isoformat()
    lines: list[dict[str, Any]] = []
    if r.stdout:
        lines.append({"type": "stdout", "text": r.stdout, "timestamp": ts})
    if r.kind == ExecKind.OK and r.stderr:
        lines.append({"type": "stderr", "text": r.stderr, "timestamp": ts})
    if r.kind != ExecKind.OK:
        name = r.error_name or {"timeout": "TimeoutError", "resource_limit": "MemoryError"}.get(r.kind.value, "Error")
        line = r.error_line or name
        value = line.split(": ", 1)[1] if ": " in line else ""
        lines.append({"type": "error", "name": name, "value": value, "traceback": r.stderr or line})
    lines.append({"type": "number_of_executions", "execution_count": 1})
    return lines
