"""A tiny OpenAI-compatible server (/v1/models, /v1/chat/completions) that replays scripted teacher answers.

Answers are chosen by a key found in the prompt (each test problem carries a tag such as ``[P07]``). ``fail`` makes
every completion request answer HTTP 500 while it is set, as a server that goes down mid-run would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from http_support import send_json

_TAG = re.compile(r"\[(P\d+)\]")


class ScriptedTeacher:
    def __init__(self, answers: dict[str, str], model: str = "scripted-teacher", cut: frozenset[str] = frozenset()) -> None:
        self.answers = answers
        self.cut = cut  # tags answered with finish_reason "length", as a teacher stopped by max_tokens
        self.model = model
        self.requests: list[str] = []  # tags asked for, in order (failed requests included)
        self.fail = False
        self.fail_after: int | None = None  # start failing once this many completions were served
        self.on_request: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedTeacher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def served(self) -> int:
        return sum(1 for _ in self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, code: int, payload: object = None) -> None:
                send_json(self, code, payload)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": teacher.model, "object": "model",
                                                                 "created": 0, "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
                m = _TAG.search(prompt)
                tag = m.group(1) if m else "?"
                with teacher._lock:
                    teacher.requests.append(tag)
                    if teacher.fail_after is not None and len(teacher.requests) > teacher.fail_after:
                        teacher.fail = True
                    failing = teacher.fail
                if failing:
                    self._send(500, {"error": {"message": "scripted server error", "type": "server_error"}})
                    return
                text = teacher.answers.get(tag)
                if text is None:
                    self._send(400, {"error": {"message": f"no scripted answer for {tag}"}})
                    return
                self._send(200, {
                    "id": f"chatcmpl-{tag}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", teacher.model),
                    "choices": [{"index": 0, "finish_reason": "length" if tag in teacher.cut else "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

        return Handler
