"""What the tests' small HTTP fakes (scripted teacher, vLLM server, E2B API) share."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, code: int, payload: Any = None) -> None:
    """Reply with ``payload`` as JSON (an empty body when None), with the length set so clients need not wait."""
    data = b"" if payload is None else json.dumps(payload).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
