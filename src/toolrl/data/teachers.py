"""Teachers for `toolrl data build-sft`: chat messages in, one assistant text out.

- :class:`OpenAITeacher`: any OpenAI-compatible endpoint (``vllm serve``, SGLang, a hosted API) through the
  ``openai`` client, which retries transient failures itself; thread-safe, so rows run concurrently.
- :class:`EngineTeacher`: one of toolrl's own engines (hf or vllm, in-process) with the model of ``model.path``.
  Calls from several threads are served one at a time (an in-process engine is one batch generator).

Every failure becomes :class:`TeacherError`; the builder records it and leaves the row for the next run.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from toolrl.errors import ToolrlError

Messages = list[dict[str, str]]


class TeacherError(Exception):
    """One request failed (after the client's own retries)."""


class Teacher(Protocol):
    name: str

    def complete(self, messages: Messages) -> str: ...

    def close(self) -> None: ...


class OpenAITeacher:
    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *,
                 temperature: float = 0.7, max_tokens: int = 4096, timeout_s: float = 600.0, max_retries: int = 2) -> None:
        import os

        import openai

        self._openai = openai
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                                    timeout=timeout_s, max_retries=max_retries)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.model = model or self._first_model()
        self.name = f"{self.model} @ {base_url}"

    def _first_model(self) -> str:
        """The served model when none is named (``vllm serve`` serves exactly one); also proves the endpoint answers."""
        try:
            models = self.client.models.list().data
        except self._openai.APIConnectionError:
            raise ToolrlError(f"cannot reach the teacher endpoint {self.base_url}",
                              "start the server (e.g. python -m vllm.entrypoints.openai.api_server --model M) "
                              "or fix --base-url") from None
        except self._openai.APIError as e:
            raise ToolrlError(f"the teacher endpoint {self.base_url} refused to list models ({e})",
                              "name the model with --teacher-model") from None
        if not models:
            raise ToolrlError(f"the teacher endpoint {self.base_url} serves no model", "name it with --teacher-model")
        return models[0].id

    def complete(self, messages: Messages) -> str:
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                       temperature=self.temperature, max_tokens=self.max_tokens)
        except self._openai.APIError as e:
            raise TeacherError(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        if not resp.choices or resp.choices[0].message.content is None:
            raise TeacherError("the endpoint returned no text")
        return resp.choices[0].message.content

    def close(self) -> None:
        self.client.close()


class EngineTeacher:
    """The model of ``cfg.model`` on the engine of ``cfg.rollout.backend``, prompted through its chat template."""

    def __init__(self, cfg: Any, *, temperature: float = 0.7, max_tokens: int = 2048) -> None:
        from toolrl.rollout import build_engine
        from toolrl.rollout.engine import SamplingSpec

        self.engine = build_engine(cfg)
        self.tokenizer = self.engine.tokenizer
        if not getattr(self.tokenizer, "chat_template", None):
            raise ToolrlError("the teacher model's tokenizer has no chat template", "use an instruct model as teacher")
        self.sampling = SamplingSpec(temperature=temperature, top_p=1.0, seed=cfg.rollout.seed)
        self.max_tokens = max_tokens
        self.name = f"{cfg.model.path or 'embedded SmolLM2-135M-Instruct'} ({cfg.rollout.backend})"
        self._lock = threading.Lock()

    def complete(self, messages: Messages) -> str:
        from toolrl.rollout.engine import GenRequest

        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        try:
            with self._lock:
                [out] = self.engine.generate([GenRequest(prompt_ids=ids, max_new_tokens=self.max_tokens)], self.sampling)
        except Exception as e:  # noqa: BLE001 - an engine failure is a teacher failure for this row
            raise TeacherError(f"{type(e).__name__}: {e}".splitlines()[0][:200]) from None
        return self.tokenizer.decode(out.token_ids, skip_special_tokens=True)

    def close(self) -> None:
        self.engine.close()
