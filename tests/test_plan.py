"""`toolrl plan`: DeepSpeed's own ZeRO estimators agree with the plan's model-state arithmetic, model shapes give
the real parameter counts, and infeasible recipes are refused with the setting to change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolrl.config.loader import load_config
from toolrl.placement.plan import PlanInputs, host_bytes_per_node, make_plan, model_state_bytes
from toolrl.placement.shapes import KNOWN, model_shape, shape_from_config

REPO = Path(__file__).resolve().parents[1]
SIZES = [(1_543_714_304, 233_570_304), (7_615_616_512, 544_997_376), (32_763_876_352, 778_567_680)]


@pytest.mark.parametrize("params,largest", SIZES)
@pytest.mark.parametrize("gpus,nodes", [(1, 1), (8, 1), (8, 4)])
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_matches_deepspeed_estimator(params: int, largest: int, gpus: int, nodes: int, offload: bool) -> None:
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cpu, gpu = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus, num_nodes=nodes,
                                                     cpu_offload=offload)
    ours = model_state_bytes(params, largest, gpus * nodes, stage=2, offload=offload)
    assert sum(ours.values()) == pytest.approx(gpu, abs=2)
    assert host_bytes_per_node(params, gpus, nodes, 2, offload) == pytest.approx(cpu, abs=2)


@pytest.mark.parametrize("params,largest", SIZES)
@pytest.mark.parametrize("gpus,nodes", [(1, 1), (8, 1), (8, 4)])
@pytest.mark.parametrize("offload", [False, True])
def test_zero3_matches_deepspeed_estimator(params: int, largest: int, gpus: int, nodes: int, offload: bool) -> None:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    # toolrl offloads the optimizer only (not the parameters) and loads without zero.Init.
    cpu, gpu, largest_mem = estimate_zero3_model_states_mem_needs(
        params, largest, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=offload, cpu_offload_params=False,
        zero_init=False)
    ours = model_state_bytes(params, largest, gpus * nodes, stage=3, offload=offload)
    assert sum(ours.values()) == pytest.approx(gpu, abs=2)
    assert ours["gathered layer"] == largest_mem
    assert host_bytes_per_node(params, gpus, nodes, 3, offload) == pytest.approx(cpu, abs=2)


def test_sharding_shrinks_with_stage() -> None:
    per_stage = [sum(model_state_bytes(10**9, 10**8, 8, s, False).values()) for s in range(4)]
    assert per_stage == sorted(per_stage, reverse=True) and per_stage[0] == 20e9  # 2+2+4+4+8 bytes replicated


def _count(model) -> int:  # noqa: ANN001
    return sum(dict((p.data_ptr(), p.numel()) for p in model.parameters()).values())  # DeepSpeed's model_to_params


@pytest.mark.parametrize("kind", ["llama_tied", "qwen2_untied"])
def test_shape_counts_match_transformers(kind: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if kind == "llama_tied":
        conf = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                           num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True)
        model = LlamaForCausalLM(conf)
    else:
        conf = Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                           num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)
        model = Qwen2ForCausalLM(conf)
    shape = shape_from_config(conf.to_dict(), kind, "test")
    assert shape.total_params == _count(model)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert shape.largest_layer_params == largest


def test_known_models_have_their_published_sizes() -> None:
    billions = {name: round(s.total_params / 1e9, 2) for name, s in KNOWN.items()}
    assert billions["qwen/qwen2.5-math-7b"] == 7.62
    assert billions["qwen/qwen2.5-32b-instruct"] == 32.76
    assert billions["qwen/qwen2.5-math-1.5b"] == 1.54
    assert model_shape(None).name.endswith("SmolLM2-135M-Instruct")


def test_local_config_json_wins(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 8, "num_key_value_heads": 2,
        "intermediate_size": 256, "vocab_size": 500, "tie_word_embeddings": True, "head_dim": 64}))
    s = model_shape(str(tmp_path))
    assert s.source.endswith("config.json") and s.head_size == 64 and s.kv_dim == 128


@pytest.mark.parametrize("recipe", ["torl_7b", "retool_32b"])
def test_shipped_gpu_recipes_fit_on_eight_80gb_gpus(recipe: str) -> None:
    cfg = load_config([recipe], [])
    plan = make_plan(cfg, model_shape(cfg.model.path), PlanInputs(gpus_per_node=8, gpu_mem_gib=80))
    assert plan.fits, [p.message for p in plan.problems]
    assert plan.placement == "colocate" and plan.engines * plan.tp == 8
    assert all(v <= 80 for v in plan.phases.values())


def test_layouts_that_cannot_start_are_refused() -> None:
    cfg = load_config(["retool_32b"], ["rollout.placement=local"])
    plan = make_plan(cfg, model_shape(cfg.model.path), PlanInputs(gpus_per_node=8))
    assert any("placement=local" in p.message for p in plan.problems)
    cfg = load_config(["retool_32b"], ["rollout.vllm.tensor_parallel_size=3"])
    msgs = [p.message for p in make_plan(cfg, model_shape(cfg.model.path), PlanInputs(gpus_per_node=8)).problems]
    assert any("does not divide" in m for m in msgs) and any("40 attention heads" in m for m in msgs)


def test_memory_problems_name_the_setting_to_change() -> None:
    cfg = load_config(["torl_7b"], ["deepspeed.zero_stage=0"])
    plan = make_plan(cfg, model_shape(cfg.model.path), PlanInputs(gpus_per_node=8, gpu_mem_gib=40))
    assert not plan.fits
    assert "deepspeed.zero_stage=3" in plan.problems[0].hint
    cfg = load_config(["torl_7b"], ["rollout.vllm.gpu_memory_utilization=0.1"])
    plan = make_plan(cfg, model_shape(cfg.model.path), PlanInputs(gpus_per_node=8))
    assert any("gpu_memory_utilization" in p.hint for p in plan.problems)


def test_more_gpus_shorten_the_update_and_shrink_states() -> None:
    cfg = load_config(["torl_7b"], [])
    shape = model_shape(cfg.model.path)
    small, big = (make_plan(cfg, shape, PlanInputs(gpus_per_node=8, nodes=n)) for n in (1, 2))
    assert big.times["update_s"] == pytest.approx(small.times["update_s"] / 2)
    assert big.phases["update"] < small.phases["update"]


def _plan_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolrl.cli.main", "plan", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_a_plan_and_refuses_with_a_hint() -> None:
    ok = _plan_cli("--config", "torl_7b", "--gpus", "8", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["fits"] and data["train_gpus"] == 8 and data["times"]["step_s"] > 0
    bad = _plan_cli("--config", "torl_7b", "--gpus", "8", "--gpu-mem", "24")
    assert bad.returncode == 2
    assert "error:" in bad.stderr and "hint:" in bad.stderr and "Traceback" not in bad.stderr


def test_preflight_counts_launched_ranks_as_training_gpus() -> None:
    from toolrl.placement.plan import preflight

    cfg = load_config(["torl_7b"], ["rollout.placement=server", "rollout.servers=[http://a:1,http://b:1]"])
    plan = preflight(cfg, world_size=16, gpu_mem_gib=80, gpus_per_node=8)
    assert plan is not None and plan.train_gpus == 16 and plan.inputs.nodes == 2 and plan.fits
    cfg = load_config(["torl_7b"], ["model.path=/nowhere/unknown-model"])
    assert preflight(cfg, world_size=8, gpu_mem_gib=80, gpus_per_node=8) is None  # unknown shape: no check


def test_train_refuses_a_layout_before_loading(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "toolrl.cli.main", "train", "--out", str(tmp_path / "r"),
                           "rollout.backend=vllm", "rollout.placement=server", "run.device=cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "rollout.servers" in proc.stderr and "hint:" in proc.stderr


@pytest.mark.parametrize("overrides,world,message", [
    (["rollout.placement=local"], 2, "one in-process vLLM engine"),
    (["rollout.placement=colocate", "rollout.vllm.tensor_parallel_size=2"], 3, "does not divide"),
    (["rollout.placement=server"], 1, "needs rollout.servers"),
])
def test_placement_rules(overrides: list[str], world: int, message: str) -> None:
    from toolrl.errors import ConfigError
    from toolrl.placement.build import check_placement

    cfg = load_config(None, ["rollout.backend=vllm", *overrides])
    with pytest.raises(ConfigError, match=message) as e:
        check_placement(cfg, world)
    assert e.value.hint
    hf = load_config(None, ["rollout.backend=hf", *overrides])
    if hf.rollout.placement == "local":
        check_placement(hf, world)  # hf engines share each rank's own module: any number of ranks
    else:  # a placement that is not local places vLLM engines: asking for hf with it is a contradiction, not a no-op
        with pytest.raises(ConfigError, match="places vLLM engines"):
            check_placement(hf, world)


def test_auto_backend_is_checked_once_resolved() -> None:
    from toolrl.errors import ConfigError
    from toolrl.placement.build import check_placement

    cfg = load_config(None, ["rollout.backend=auto", "rollout.placement=local"])
    check_placement(cfg, 2)  # before the model is at hand, auto may still resolve to hf
    with pytest.raises(ConfigError, match="one in-process vLLM engine"):
        check_placement(cfg, 2, backend="vllm")
