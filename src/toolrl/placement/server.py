"""Rollouts on separate OpenAI-compatible vLLM servers (``rollout.placement=server``): an engine of the step protocol.

Token ids go in as ``prompt=[ids]`` on ``/v1/completions`` and come back through ``return_token_ids`` with each
sampled token's logprob (``logprobs=0``); stop strings, per-request seeds and EOS ids are vLLM's sampling params.
Requests run on a thread pool and are spread over the servers by fewest requests in flight. A request that fails
(connection lost, 5xx) is retried once on the next healthy server; when that fails too, its output carries
``error`` and the trajectory becomes an infrastructure failure (dropped from training, never blamed on the model).
No healthy server left is a clear ToolrlError.

Weight sync: rank 0 writes the trainer's ``state_dict()`` (tied LM head included, which vLLM's reload needs) to a
directory every server can read, then calls the dev-mode ``/collective_rpc`` ``reload_weights`` on every server
and resets their prefix caches; the same logprob check as the in-process engine (``VLLMEngine.check_weights``)
then compares a server's logprobs with the trainer's forward pass.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from toolrl.errors import ToolrlError
from toolrl.rollout.engine import GenOutput, GenRequest, SamplingSpec
from toolrl.rollout.vllm_engine import VLLMEngine, WeightSyncError, finish_of, request_seed

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

try:  # the step protocol's capability flags
    from toolrl.rollout.engine import EngineCaps
except ImportError:  # a tree without them: the same flags as a plain record
    from dataclasses import dataclass as _dataclass

    @_dataclass(frozen=True)
    class EngineCaps:  # type: ignore[no-redef]
        shares_policy_weights: bool = False
        needs_weight_sync: bool = False
        returns_logprobs: bool = True


class ServerDown(ToolrlError):
    """A rollout server stopped answering."""


class ServerEngine:
    """Drives one or more vLLM OpenAI-compatible servers. ``submit`` returns at once; ``step`` hands back what
    finished. Every rank of a training run may hold one; only ``is_main`` pushes weights."""

    name = "vllm-server"
    caps = EngineCaps(shares_policy_weights=False, needs_weight_sync=True, returns_logprobs=True)

    def __init__(self, cfg: "RootConfig", urls: Sequence[str], tokenizer: Any = None, *, model_path: str | None = None,
                 sync_dir: str | Path | None = None, is_main: bool = True,
                 broadcast: Callable[[Any], Any] | None = None, request_timeout_s: float = 600.0) -> None:
        import httpx

        from toolrl.models import eos_token_ids, load_tokenizer, resolve_model_path, sampler_dtype

        if not urls:
            raise ToolrlError("rollout.placement=server needs at least one server in rollout.servers",
                              "start one with `toolrl serve --config X` and pass rollout.servers=[http://HOST:PORT]")
        self.cfg = cfg
        self.vcfg = cfg.rollout.vllm
        self.urls = [u.rstrip("/") for u in urls]
        self.model_path = model_path or resolve_model_path(cfg.model)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.model_path, cfg.model.trust_remote_code)
        from transformers import AutoConfig

        self.hf_config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=cfg.model.trust_remote_code)
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.hf_config)
        import torch

        # The servers' dtype (`toolrl serve` passes rollout.vllm.dtype, else model.dtype, as resolved for the
        # device): it sets the check's tolerance.
        self.gpu = torch.cuda.is_available() and cfg.run.device != "cpu"
        self.torch_dtype = sampler_dtype(cfg, "cuda" if self.gpu else "cpu")
        self.max_model_len = self.vcfg.max_model_len
        self.is_main = is_main
        self._broadcast = broadcast or (lambda x: x)
        self.sync_dir = Path(sync_dir) if sync_dir else None
        self.tokens_generated = 0
        self.last_sync_logprob_diff: dict[str, Any] | None = None
        self._http = httpx.Client(timeout=httpx.Timeout(request_timeout_s, connect=10.0),
                                  limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self._pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="toolrl-server")
        self._lock = threading.Lock()
        self._inflight = {u: 0 for u in self.urls}
        self._dead: set[str] = set()
        self._live: dict[str, Future[GenOutput]] = {}
        self._early: list[tuple[str, GenOutput]] = []
        self._rr = itertools.count()
        self.models = {u: self._health(u) for u in self.urls}

    # ------------------------------------------------------------------------------------ servers
    def _health(self, url: str) -> str:
        """The served model's name; raises when the server does not answer."""
        try:
            r = self._http.get(f"{url}/health", timeout=10.0)
            r.raise_for_status()
            models = self._http.get(f"{url}/v1/models", timeout=10.0).json()
            return str(models["data"][0]["id"])
        except Exception as e:  # noqa: BLE001 - any failure here means "not usable"
            raise ServerDown(f"rollout server {url} does not answer ({type(e).__name__}: {str(e)[:120]})",
                             "start it with `toolrl serve` (healthy after ~30 s on CPU) or fix rollout.servers") from None

    def _pick(self, exclude: str | None = None) -> str:
        with self._lock:
            alive = [u for u in self.urls if u not in self._dead and u != exclude]
            if not alive:
                alive = [u for u in self.urls if u not in self._dead]
            if not alive:
                raise ServerDown(f"every rollout server is down ({', '.join(self.urls)})",
                                 "restart them (`toolrl serve`) and resume the run with `toolrl train --resume RUN_DIR`")
            start = next(self._rr)
            url = min(alive, key=lambda u: (self._inflight[u], (self.urls.index(u) - start) % len(self.urls)))
            self._inflight[url] += 1
            return url

    def _release(self, url: str) -> None:
        with self._lock:
            self._inflight[url] -= 1

    def _payload(self, url: str, req: GenRequest, spec: SamplingSpec, max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.models[url],
            "prompt": list(req.prompt_ids),
            "max_tokens": max_tokens,
            "temperature": 0.0 if spec.greedy else spec.temperature,
            "top_p": 1.0 if spec.greedy else spec.top_p,
            "top_k": spec.top_k if (spec.top_k and not spec.greedy) else 0,
            "seed": None if spec.greedy else request_seed(spec.seed, req.request_id, len(req.prompt_ids)),
            "stop": list(req.stop),
            "stop_token_ids": sorted(self.eos_token_ids),
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "logprobs": 0,  # the sampled token's logprob only
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }

    def _complete(self, req: GenRequest, spec: SamplingSpec, max_tokens: int) -> GenOutput:
        last_error = ""
        tried: str | None = None
        for _attempt in range(2):  # one retry, on another server when there is one
            try:
                url = self._pick(exclude=tried)
            except ServerDown as e:
                return GenOutput(token_ids=[], finish="length", logprobs=[], error=e.message)
            tried = url
            try:
                r = self._http.post(f"{url}/v1/completions", json=self._payload(url, req, spec, max_tokens))
                if r.status_code >= 500:
                    raise ConnectionError(f"HTTP {r.status_code}: {r.text[:200]}")
                if r.status_code >= 400:  # our request is wrong: not a server failure, and a retry will not help
                    raise ToolrlError(f"rollout server {url} refused a request: HTTP {r.status_code} {r.text[:300]}",
                                      "check that the server serves the same model as model.path")
                choice = r.json()["choices"][0]
            except ToolrlError:
                raise
            except Exception as e:  # noqa: BLE001 - connection lost, timeout, 5xx: a server failure
                last_error = f"{url}: {type(e).__name__}: {str(e)[:200]}"
                if not self._alive(url):
                    with self._lock:
                        self._dead.add(url)
                continue
            finally:
                self._release(url)
            ids = [int(t) for t in choice.get("token_ids") or []]
            lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
            finish, stop_str = finish_of(choice.get("finish_reason"), choice.get("stop_reason"))
            logprobs = [float(x) if x is not None else 0.0 for x in lps]
            with self._lock:
                self.tokens_generated += len(ids)
            return GenOutput(ids, finish, stop_str, logprobs if len(logprobs) == len(ids) else None)
        return GenOutput(token_ids=[], finish="length", logprobs=[],
                         error=f"the rollout server failed twice: {last_error}")

    def _alive(self, url: str) -> bool:
        try:
            return self._http.get(f"{url}/health", timeout=5.0).status_code == 200
        except Exception:  # noqa: BLE001
            return False

    # ------------------------------------------------------------------------------------ step protocol
    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        room = self.max_model_len - len(req.prompt_ids)
        max_tokens = min(req.max_new_tokens, room)
        if max_tokens <= 0:
            self._early.append((key, GenOutput(token_ids=[], finish="length", logprobs=[])))
            return
        self._live[key] = self._pool.submit(self._complete, req, spec, max_tokens)

    def step(self) -> list[tuple[str, GenOutput]]:
        """What finished; waits up to 50 ms for something to finish when nothing has."""
        done, self._early = self._early, []
        if self._live and not done:
            wait(list(self._live.values()), timeout=0.05, return_when=FIRST_COMPLETED)
        for key, fut in list(self._live.items()):
            if fut.done():
                del self._live[key]
                done.append((key, fut.result()))  # a ToolrlError (bad request) surfaces here
        if len(self._dead) == len(self.urls):  # nothing left to generate with: stop the run, clearly
            self.abort(list(self._live))
            raise ServerDown(f"every rollout server is down ({', '.join(self.urls)})",
                             "restart them (`toolrl serve`) and resume the run with `toolrl train --resume RUN_DIR`")
        return done

    def abort(self, keys: Sequence[str]) -> None:
        for k in keys:
            fut = self._live.pop(k, None)
            if fut is not None:
                fut.cancel()  # a request already sent runs to its end on the server; its output is ignored

    def has_unfinished(self) -> bool:
        return bool(self._early or self._live)

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        keys = [f"g{i}:{r.request_id}" for i, r in enumerate(requests)]
        for k, r in zip(keys, requests):
            self.submit(k, r if r.request_id else GenRequest(r.prompt_ids, r.max_new_tokens, list(r.stop), k), sampling)
        results: dict[str, GenOutput] = {}
        while len(results) < len(keys):
            results.update(self.step())
        return [results[k] for k in keys]

    def run_rollouts(self, problems: Any, **kwargs: Any) -> Any:
        from toolrl.placement.colocate import scheduler_entry

        return scheduler_entry(self, problems, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # ------------------------------------------------------------------------------------ weight sync
    def sequence_logprobs(self, ids: list[int]) -> list[float]:
        """A server's logprob of each token of ``ids`` given the tokens before it (prompt_logprobs)."""
        url = self._pick()
        try:
            r = self._http.post(f"{url}/v1/completions", json={
                "model": self.models[url], "prompt": list(ids), "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": 0, "return_token_ids": True})
        finally:
            self._release(url)
        if r.status_code != 200:
            raise ServerDown(f"rollout server {url} failed the logprob probe: HTTP {r.status_code} {r.text[:200]}",
                             "check the server's log")
        plp = r.json()["choices"][0]["prompt_logprobs"]
        return [float(d[str(t)]["logprob"]) for d, t in zip(plp[1:], ids[1:])]

    check_weights = VLLMEngine.check_weights  # the one logprob check, against the trainer's forward pass
    _tolerance = VLLMEngine._tolerance

    def _rpc(self, url: str, method: str, kwargs: dict[str, Any]) -> None:
        r = self._http.post(f"{url}/collective_rpc", json={"method": method, "kwargs": kwargs}, timeout=600.0)
        if r.status_code == 404:
            raise WeightSyncError(f"rollout server {url} has no /collective_rpc endpoint",
                                  "start servers with VLLM_SERVER_DEV_MODE=1 (`toolrl serve` does)")
        if r.status_code != 200:
            raise WeightSyncError(f"rollout server {url}: {method} failed: HTTP {r.status_code} {r.text[:300]}",
                                  "the directory must be readable by the server (rollout.servers on other hosts "
                                  "need the run directory on a shared file system)")

    def _save(self, module: Any, target: Path) -> None:
        """state_dict() as safetensors (a tied LM head included as its own tensor), replaced atomically."""
        from safetensors.torch import save_file

        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    def sync_weights(self, source: Any) -> dict[str, Any]:
        """Every rank calls this after the update (inside the trainer's gathered-parameters context). Rank 0 writes
        the weights and has the servers reload them; then every rank runs the logprob check (the same forward on
        every rank keeps a ZeRO-3 module's collectives in step), so every rank stops on a failure and none hangs."""
        start = time.perf_counter()
        status: dict[str, Any] = {}
        module = getattr(source, "module", source)
        if self.is_main:
            try:
                if self.sync_dir is None:
                    import tempfile

                    self.sync_dir = Path(tempfile.mkdtemp(prefix="toolrl-server-sync-")) / "weights"
                self._save(module, self.sync_dir)
                for url in self.urls:
                    if url in self._dead:
                        continue
                    self._rpc(url, "reload_weights", {"weights_path": str(self.sync_dir)})
                    self._http.post(f"{url}/reset_prefix_cache", timeout=60.0)
            except ToolrlError as e:
                status = {"error": e.message, "hint": e.hint}
        status = self._broadcast(status)
        if "error" in status:
            raise WeightSyncError(status["error"], status.get("hint") or "check the rollout servers' logs")
        result: dict[str, Any] = {"method": "server-reload"}
        if self.vcfg.sync_check:
            result.update(self.check_weights(module))
            if result["mean"] > self._tolerance():
                raise WeightSyncError(
                    f"the rollout servers' logprobs differ from the trainer's after the weight reload (mean |diff| "
                    f"{result['mean']:.3g}, max {result['max']:.3g}, tolerance {self._tolerance():g})",
                    "the servers must serve model.path in the trainer's dtype (`toolrl serve --config` with the "
                    "training config); check their logs")
        result["seconds"] = time.perf_counter() - start
        self.last_sync_logprob_diff = result
        return result


__all__ = ["ServerDown", "ServerEngine"]
