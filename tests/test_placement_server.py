"""The rollout-server engine's request handling against small in-test HTTP servers that speak the part of vLLM's
OpenAI-compatible API it uses (the real server is exercised by tests/test_placement_e2e.py): payloads, load
spreading, the one retry, dead servers, and engine failures that become infrastructure failures."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from toolrl.config.schema import RootConfig
from toolrl.errors import ToolrlError
from toolrl.placement.server import ServerDown, ServerEngine
from toolrl.rollout.engine import GenOutput, GenRequest, SamplingSpec
from toolrl.rollout.vllm_engine import request_seed

from http_support import send_json


class FakeServer:
    """Answers /health, /v1/models and /v1/completions; ``mode`` = ok | error_once | dead | bad_request."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: object = None) -> None:
                send_json(self, code, payload)

            def do_GET(self) -> None:  # noqa: N802
                if outer.mode == "dead":
                    return self._send(503, {})
                if self.path == "/health":
                    return self._send(200, {})
                return self._send(200, {"data": [{"id": "tiny"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if outer.mode == "dead":
                    return self._send(503, {"error": "gone"})
                if outer.mode == "error_once":
                    outer.mode = "ok"
                    return self._send(500, {"error": "transient"})
                if outer.mode == "bad_request":
                    return self._send(400, {"error": "bad"})
                ids = [7, 8, 9][: body["max_tokens"]]
                return self._send(200, {"choices": [{
                    "index": 0, "text": "", "token_ids": ids, "finish_reason": "length", "stop_reason": None,
                    "logprobs": {"token_logprobs": [-0.5] * len(ids), "tokens": [f"token_id:{i}" for i in ids]}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def servers():
    made = [FakeServer(), FakeServer()]
    yield made
    for s in made:
        s.close()


def _engine(model: Path, urls: list[str]) -> ServerEngine:
    cfg = RootConfig()
    cfg.model.path = str(model)
    cfg.run.device = "cpu"
    cfg.rollout.vllm.max_model_len = 64
    return ServerEngine(cfg, urls)


def _drain(engine: ServerEngine, n: int) -> dict[str, GenOutput]:
    out: dict[str, GenOutput] = {}
    for _ in range(400):
        out.update(engine.step())
        if len(out) == n:
            break
    return out


def test_payload_is_token_in_token_out_with_seeds(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [servers[0].url])
    spec = SamplingSpec(temperature=0.8, top_p=0.9, seed=5)
    [out] = engine.generate([GenRequest([1, 2, 3], 3, stop=["```output"], request_id="p#1")], spec)
    assert out.token_ids == [7, 8, 9] and out.logprobs == [-0.5] * 3 and out.finish == "length" and out.error is None
    body = servers[0].requests[-1]
    assert body["prompt"] == [1, 2, 3] and body["model"] == "tiny" and body["max_tokens"] == 3
    assert body["return_token_ids"] and body["logprobs"] == 0 and body["include_stop_str_in_output"]
    assert body["stop"] == ["```output"] and body["seed"] == request_seed(5, "p#1", 3)
    assert body["temperature"] == 0.8 and body["top_p"] == 0.9
    assert set(body["stop_token_ids"]) == engine.eos_token_ids
    assert engine.tokens_generated == 3
    engine.generate([GenRequest([1, 2], 63)], SamplingSpec(temperature=0.0))
    assert servers[0].requests[-1]["max_tokens"] == 62  # capped by the room left in max_model_len (64 - 2)
    assert servers[0].requests[-1]["temperature"] == 0.0 and servers[0].requests[-1]["seed"] is None
    engine.close()


def test_load_is_spread_over_servers(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [s.url for s in servers])
    outs = engine.generate([GenRequest([1, i], 2, request_id=f"r{i}") for i in range(12)], SamplingSpec(temperature=0))
    assert all(o.error is None for o in outs)
    counts = [len(s.requests) for s in servers]
    assert sum(counts) == 12 and min(counts) >= 3
    engine.close()


def test_a_transient_error_is_retried_once(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [servers[0].url])
    servers[0].mode = "error_once"
    [out] = engine.generate([GenRequest([1], 2)], SamplingSpec(temperature=0))
    assert out.error is None and out.token_ids == [7, 8] and len(servers[0].requests) == 2
    engine.close()


def test_a_dead_server_is_left_and_its_requests_go_elsewhere(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [s.url for s in servers])
    servers[0].mode = "dead"
    outs = engine.generate([GenRequest([1, i], 2, request_id=f"r{i}") for i in range(6)], SamplingSpec(temperature=0))
    assert all(o.error is None for o in outs)  # each failed request was retried on the live server
    assert servers[0].url in engine._dead
    before = len(servers[0].requests)
    engine.generate([GenRequest([1], 2)], SamplingSpec(temperature=0))
    assert len(servers[0].requests) == before  # a dead server gets no more requests
    engine.close()


def test_all_servers_dead_is_a_clear_error(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [s.url for s in servers])
    for s in servers:
        s.mode = "dead"
    engine.submit("k", GenRequest([1], 2), SamplingSpec(temperature=0))
    with pytest.raises(ServerDown, match="every rollout server is down") as e:
        _drain(engine, 1)
    assert "--resume" in (e.value.hint or "")
    engine.close()


def test_an_unreachable_server_is_refused_at_start(tiny_model_dir: Path) -> None:
    with pytest.raises(ServerDown, match="does not answer") as e:
        _engine(tiny_model_dir, ["http://127.0.0.1:9"])
    assert "toolrl serve" in (e.value.hint or "")


def test_a_refused_request_is_not_retried_and_surfaces(tiny_model_dir: Path, servers) -> None:
    engine = _engine(tiny_model_dir, [servers[0].url])
    servers[0].mode = "bad_request"
    engine.submit("k", GenRequest([1], 2), SamplingSpec(temperature=0))
    with pytest.raises(ToolrlError, match="refused a request"):
        _drain(engine, 1)
    assert len(servers[0].requests) == 1
    engine.close()


def test_engine_failure_makes_an_infrastructure_failed_trajectory(tokenizer) -> None:
    from toolrl.rollout.agent import TrajectoryState
    from toolrl.train.rl import select_for_update
    from toolrl.types import Problem, Trajectory

    cfg = RootConfig()
    good, bad = (TrajectoryState(Trajectory(problem=Problem(id="p", problem="q", answer="1"), sample_index=i,
                                            prompt_text="q", prompt_ids=[1]), cfg, tokenizer, {0})
                 for i in range(2))
    assert good.on_generated(GenOutput([5, 0], "eos")) is None
    assert bad.on_generated(GenOutput([], "length", error="server died")) is None
    assert bad.done and bad.traj.finish_reason == "infra_error" and bad.traj.infra_failed
    assert not good.traj.infra_failed
    kept, stats = select_for_update([good.traj, bad.traj], filter_zero_signal=False)
    assert kept == [good.traj] and stats["train/infra_dropped"] == 1.0


def test_serve_command_matches_what_training_needs(tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "toolrl.cli.main", "serve", "--dry-run", "--port", "8555",
                           f"model.path={tiny_model_dir}", "run.device=cpu", "rollout.vllm.max_model_len=300"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    command, url = proc.stdout.strip().splitlines()[-2:]
    assert url == "http://127.0.0.1:8555"
    assert "VLLM_SERVER_DEV_MODE=1" in command  # /collective_rpc for the weight reload
    assert "-m vllm.entrypoints.openai.api_server" in command and f"--model {tiny_model_dir}" in command
    assert "--logprobs-mode processed_logprobs" in command and "--max-model-len 300" in command
    assert "--dtype float32" in command  # the trainer's CPU dtype: the logprob check compares like with like
