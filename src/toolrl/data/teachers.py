"""Teachers for `toolrl data build-sft`: chat messages in, one assistant text out.

- :class:`OpenAITeacher`: any OpenAI-compatible endpoint (``vllm serve``, SGLang, a hosted API) through the
  ``openai`` client, which retries transient failures itself; thread-safe, so rows run concurrently.
- :class:`EngineTeacher`: one of toolrl's own engines (hf or vllm, in-process) with the model of ``model.path``;
  concurrent calls are batched into one ``generate``.

Every failure becomes :class:`TeacherError`; the builder records it and leaves the row for the next run.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from toolrl.errors import ToolrlError

Messages = list[dict[str, str]]


class TeacherError(Exception):
    """One request failed (after the client's own retries)."""


@dataclass(frozen=True)
class Completion:
    text: str
    truncated: bool = False  # stopped by the token limit, not by the model


class Teacher(Protocol):
    name: str

    def complete(self, messages: Messages) -> Completion: ...

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

    def complete(self, messages: Messages) -> Completion:
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                       temperature=self.temperature, max_tokens=self.max_tokens)
        except self._openai.APIError as e:
            raise TeacherError(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        if not resp.choices or resp.choices[0].message.content is None:
            raise TeacherError("the endpoint returned no text")
        choice = resp.choices[0]
        return Completion(choice.message.content or "", truncated=choice.finish_reason == "length")

    def close(self) -> None:
        self.client.close()


class EngineTeacher:
    """The model of ``cfg.model`` on the engine of ``cfg.rollout.backend``, prompted through its chat template.

    Requests from the builder's threads are collected into batches: whatever is waiting when the engine becomes
    free is generated together (up to ``batch_size``), so ``--concurrency`` speeds up an in-process teacher too.
    """

    def __init__(self, cfg: Any, *, temperature: float = 0.7, max_tokens: int = 2048, engine: Any = None) -> None:
        from toolrl.rollout.engine import SamplingSpec

        if engine is None:
            from toolrl.rollout import build_engine

            engine = build_engine(cfg)
        self.engine = engine
        self.tokenizer = engine.tokenizer
        if not getattr(self.tokenizer, "chat_template", None):
            raise ToolrlError("the teacher model's tokenizer has no chat template", "use an instruct model as teacher")
        self.sampling = SamplingSpec(temperature=temperature, top_p=1.0, seed=cfg.rollout.seed)
        self.max_tokens = max_tokens
        self.batch_size = max(1, cfg.rollout.batch_size)
        self.name = f"{cfg.model.path or 'embedded SmolLM2-135M-Instruct'} ({cfg.rollout.backend})"
        self.batches: list[int] = []  # sizes of the batches generated (for tests and logs)
        self._queue: queue.Queue[tuple[list[int], Future] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="toolrl-teacher", daemon=True)
        self._worker.start()

    def complete(self, messages: Messages) -> Completion:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        fut: Future = Future()
        self._queue.put((list(self.tokenizer(text, add_special_tokens=False)["input_ids"]), fut))
        return fut.result()

    def _serve(self) -> None:
        from toolrl.rollout.engine import GenRequest

        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.batch_size:  # everything already waiting joins this batch
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self.batches.append(len(batch))
            try:
                outs = self.engine.generate([GenRequest(prompt_ids=ids, max_new_tokens=self.max_tokens) for ids, _ in batch],
                                            self.sampling)
                for (_, fut), out in zip(batch, outs):
                    fut.set_result(Completion(self.tokenizer.decode(out.token_ids, skip_special_tokens=True),
                                              truncated=out.finish == "length"))
            except Exception as e:  # noqa: BLE001 - an engine failure is a teacher failure for these rows
                for _, fut in batch:
                    fut.set_exception(TeacherError(f"{type(e).__name__}: {e}".splitlines()[0][:200]))
            if stop:
                return

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=600)
        self.engine.close()
