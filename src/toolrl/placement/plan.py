"""Per-GPU memory and step-time plan of a recipe on N GPUs: does it fit, and if not, which setting to change.

Pure arithmetic on the model's shape (``toolrl.placement.shapes``) and the config; nothing is loaded or imported
from torch, DeepSpeed or vLLM. The model-state arithmetic is DeepSpeed's own (its ZeRO estimators
``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``; the tests compare the two),
split into its parts:

    mixed precision (bf16/fp16)   bytes per parameter
      16-bit weights              2   sharded by ZeRO-3
      16-bit gradients            2   (ZeRO-2 only; ZeRO-3 reduces straight into the fp32 shard) sharded by ZeRO-2
      fp32 gradients              4   sharded by ZeRO-1/2/3
      fp32 master weights         4   sharded by ZeRO-1/2/3
      Adam moments                8   sharded by ZeRO-1/2/3
    ZeRO-3 also holds the largest module gathered (4 bytes/param of it); offload_optimizer moves everything but
    the 16-bit weights (and that buffer) to the CPU.

Activations, the vLLM share and the runtime overhead are estimates whose formulas are spelt out below; the time
per step comes from the stated rates (``PlanInputs``), not from a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolrl.placement.shapes import ModelShape

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

GIB = 1024**3
RUNTIME_OVERHEAD_GIB = 2.0  # CUDA context, NCCL buffers, allocator fragmentation (rule of thumb, per process)
VLLM_OVERHEAD_GIB = 1.5  # vLLM's own activation peak at profiling and sampler buffers, inside its share
LOGITS_CHUNK_ROWS = 4096  # toolrl.algos.logits processes logits in chunks of this many rows
ADDITIONAL_BUFFER = 1.5  # DeepSpeed's additional_buffer_factor for host memory


@dataclass
class PlanInputs:
    gpus_per_node: int
    nodes: int = 1
    gpu_mem_gib: float = 80.0
    # Stated rates for the time estimate (A100-80GB-like defaults; pass your own).
    gpu_tflops: float = 312.0  # dense bf16 peak
    mfu: float = 0.35  # share of peak the update reaches
    hbm_gbs: float = 2000.0  # memory bandwidth: decoding reads the weights and the KV cache every step
    response_fill: float = 0.5  # mean response length as a share of rollout.max_new_tokens
    concurrency: int | None = None  # trajectories in flight per engine (default: all of its share of the step)
    rollout_gpus: int | None = None  # placement=server: GPUs the servers use (default: servers x TP)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class Row:
    name: str
    gib: float
    note: str = ""


@dataclass
class Problem:
    message: str
    hint: str


@dataclass
class Plan:
    model: ModelShape
    inputs: PlanInputs
    placement: str
    train_gpus: int
    rollout_gpus: int  # separate GPUs for servers (0 when colocated)
    tp: int
    engines: int  # vLLM engines (data-parallel groups)
    seq_len: int
    train: list[Row] = field(default_factory=list)  # per training GPU, persistent
    activations: list[Row] = field(default_factory=list)
    vllm: list[Row] = field(default_factory=list)  # per GPU that hosts vLLM
    phases: dict[str, float] = field(default_factory=dict)  # GiB per GPU at the peak of each phase
    host_gib_per_node: float = 0.0
    kv_sequences: float = 0.0  # full-length sequences the KV cache of one engine holds at once
    concurrency: int = 0
    times: dict[str, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------- model states
def model_state_bytes(params: int, largest_layer: int, world: int, stage: int, offload: bool,
                      mixed: bool = True) -> dict[str, float]:
    """Bytes per GPU of each part of one trained model's state (see the module docstring).

    >>> s = model_state_bytes(10**9, 10**8, world=8, stage=2, offload=False)
    >>> round(sum(s.values()) / 1e9, 3)  # DeepSpeed: 2P + 18P/N
    4.25
    """
    n = max(1, world)
    P = float(params)
    if not mixed:  # fp32 training: no separate master copy, no 16-bit gradients
        parts = {"weights": 4 * P, "gradients": 4 * P, "optimizer": 8 * P}
        shard = {"weights": stage >= 3, "gradients": stage >= 2, "optimizer": stage >= 1}
        out = {k: v / n if shard[k] else v for k, v in parts.items()}
        if offload and stage >= 1:
            out["gradients"] = out["optimizer"] = 0.0
        if stage >= 3:
            out["gathered layer"] = 4.0 * largest_layer
        return out
    out = {
        "weights (16-bit)": 2 * P / n if stage >= 3 else 2 * P,
        "gradients (16-bit)": 0.0 if stage >= 3 else (2 * P / n if stage >= 2 else 2 * P),
        "gradients (fp32)": 4 * P / n if stage >= 1 else 4 * P,
        "master weights (fp32)": 4 * P / n if stage >= 1 else 4 * P,
        "Adam moments (fp32)": 8 * P / n if stage >= 1 else 8 * P,
    }
    if offload and stage >= 1:
        for k in ("gradients (16-bit)", "gradients (fp32)", "master weights (fp32)", "Adam moments (fp32)"):
            out[k] = 0.0
    if stage >= 3:
        out["gathered layer"] = 4.0 * largest_layer
    return out


def host_bytes_per_node(params: int, gpus_per_node: int, nodes: int, stage: int, offload: bool) -> float:
    """Host (CPU) memory one node needs for the model states, as DeepSpeed's estimators count it (no zero.Init:
    toolrl loads the full model in every rank before DeepSpeed partitions it)."""
    P = float(params)
    total = gpus_per_node * nodes
    if stage >= 3:
        if offload:
            return P * max(4 * gpus_per_node, 16 / nodes) * ADDITIONAL_BUFFER
        return P * 4 * gpus_per_node * ADDITIONAL_BUFFER
    if offload and stage >= 1:
        return P * max(4 * total, 16) * ADDITIONAL_BUFFER
    return P * 4 * gpus_per_node * ADDITIONAL_BUFFER


# ---------------------------------------------------------------------------------------------- activations
def activation_bytes(m: ModelShape, tokens: int, response_tokens: int, checkpointing: bool, dtype_bytes: int) -> dict[str, float]:
    """Peak activation memory of one micro-batch forward/backward of ``tokens`` tokens (all rows together).

    Per token and layer a decoder keeps (sdpa/flash attention, no dropout): the two norm inputs and outputs (4h),
    q, k, v and the attention output (2q + 2kv), the MLP's gate, up, act(gate) and their product (4I), the two
    residual outputs (2h), in the model dtype, plus fp32 norm statistics (8h bytes). With gradient checkpointing
    only each layer's input (h) is kept and one layer is recomputed at a time. The LM head's logits exist only
    for the response columns (bf16 logits + their gradient) and the log-softmax works on fp32 row chunks.
    """
    per_layer_token = dtype_bytes * (6 * m.hidden + 2 * m.q_dim + 2 * m.kv_dim + 4 * m.intermediate) + 8 * m.hidden
    if checkpointing:
        layers = m.layers * tokens * m.hidden * dtype_bytes + tokens * per_layer_token
        name = "layer inputs (checkpointed) + one layer recomputed"
    else:
        layers = m.layers * tokens * per_layer_token
        name = "every layer's activations"
    logits = response_tokens * m.vocab * 2 * dtype_bytes + min(LOGITS_CHUNK_ROWS, response_tokens) * m.vocab * 4 * 3
    return {name: float(layers), "logits (response columns) + fp32 chunk": float(logits)}


# ---------------------------------------------------------------------------------------------- the plan
def make_plan(cfg: "RootConfig", m: ModelShape, inputs: PlanInputs) -> Plan:
    """The plan of ``cfg`` on ``inputs.total_gpus`` GPUs of ``inputs.gpu_mem_gib`` each."""
    r, v, ds, a, t = cfg.rollout, cfg.rollout.vllm, cfg.deepspeed, cfg.algo, cfg.train
    dtype_bytes = 4 if cfg.model.dtype == "float32" else 2
    mixed = dtype_bytes == 2
    placement = r.placement if r.backend == "vllm" else "hf"
    tp = max(1, int(v.tensor_parallel_size)) if r.backend == "vllm" else 1
    total = inputs.total_gpus
    problems: list[Problem] = []
    notes: list[str] = []

    rollout_gpus = 0
    if placement == "server":
        rollout_gpus = inputs.rollout_gpus if inputs.rollout_gpus is not None else max(1, len(r.servers)) * tp
    train_gpus = total - rollout_gpus
    if train_gpus < 1:
        problems.append(Problem(f"the rollout servers take {rollout_gpus} of the {total} GPUs: none is left to train",
                                "add GPUs (--gpus/--nodes) or run fewer/smaller servers (--rollout-gpus)"))
        train_gpus = 1
    engines = 1
    if placement == "colocate":
        if train_gpus % tp:
            problems.append(Problem(f"rollout.vllm.tensor_parallel_size={tp} does not divide the {train_gpus} training ranks",
                                    f"use a tensor_parallel_size that divides {train_gpus}, e.g. {_divisor(train_gpus, tp)}"))
        engines = max(1, train_gpus // tp)
        if tp > inputs.gpus_per_node:
            problems.append(Problem(f"tensor_parallel_size={tp} spans more than one node ({inputs.gpus_per_node} GPUs each)",
                                    f"keep tensor_parallel_size <= {inputs.gpus_per_node}"))
    elif placement == "server":
        engines = max(1, rollout_gpus // tp)
    elif placement == "local" and train_gpus > 1:
        problems.append(Problem(f"rollout.placement=local runs one in-process vLLM engine, but the run has {train_gpus} "
                                "training ranks", "use rollout.placement=colocate (an engine on every rank) or server"))
    if r.backend == "vllm" and (m.heads % tp or (m.kv_heads % tp and tp % m.kv_heads)):
        problems.append(Problem(f"{m.name} has {m.heads} attention heads and {m.kv_heads} KV heads: vLLM cannot split "
                                f"them over tensor_parallel_size={tp}",
                                f"use a tensor_parallel_size dividing {m.heads}, e.g. {_divisor(m.heads, tp)}"))
    if t.prompts_per_step < train_gpus:
        problems.append(Problem(f"train.prompts_per_step={t.prompts_per_step} is below the {train_gpus} training ranks",
                                f"raise train.prompts_per_step to at least {train_gpus}"))

    seq_len = r.max_prompt_tokens + r.max_new_tokens
    plan = Plan(model=m, inputs=inputs, placement=placement, train_gpus=train_gpus, rollout_gpus=rollout_gpus, tp=tp,
                engines=engines, seq_len=seq_len, problems=problems, notes=notes)

    # -- training model states, per training GPU
    P, LL = m.total_params, m.largest_layer_params
    for k, b in model_state_bytes(P, LL, train_gpus, ds.zero_stage, ds.offload_optimizer, mixed).items():
        plan.train.append(Row(f"policy {k}", b / GIB))
    critic_params = P - (0 if m.tied_embeddings else m.embedding_params) + m.hidden + 1  # no LM head, a value head
    if a.name == "ppo":
        for k, b in model_state_bytes(critic_params, LL, train_gpus, ds.zero_stage, ds.offload_optimizer, mixed).items():
            plan.train.append(Row(f"critic {k}", b / GIB))
    if a.kl_coef > 0:
        plan.train.append(Row("reference model (full copy, not sharded)", dtype_bytes * P / GIB))
    plan.train.append(Row("runtime overhead", RUNTIME_OVERHEAD_GIB, "CUDA context, NCCL, fragmentation"))
    states = sum(x.gib for x in plan.train)
    plan.host_gib_per_node = host_bytes_per_node(P, inputs.gpus_per_node, inputs.nodes, ds.zero_stage,
                                                 ds.offload_optimizer) / GIB * (2 if a.name == "ppo" else 1)

    # -- activations of one micro-batch
    mb = max(1, a.micro_batch_size)
    act = activation_bytes(m, mb * seq_len, mb * r.max_new_tokens, t.gradient_checkpointing, dtype_bytes)
    plan.activations = [Row(f"{k} (micro-batch {mb} x {seq_len} tokens)", b / GIB) for k, b in act.items()]
    activations = sum(x.gib for x in plan.activations)

    # -- vLLM on the GPUs that host it
    gpu = inputs.gpu_mem_gib
    per_engine = max(1, -(-t.prompts_per_step // engines)) * max(1, a.n_samples)
    plan.concurrency = inputs.concurrency or per_engine
    vllm_share = 0.0
    if r.backend == "vllm":
        weights = dtype_bytes * P / tp / GIB
        kv_heads_gpu = max(1, math.ceil(m.kv_heads / tp))
        kv_token = 2 * m.layers * kv_heads_gpu * m.head_size * dtype_bytes
        vllm_share = v.gpu_memory_utilization * gpu
        kv_avail = vllm_share - weights - VLLM_OVERHEAD_GIB
        plan.kv_sequences = max(0.0, kv_avail * GIB / (kv_token * seq_len))
        need_all = plan.concurrency * seq_len * kv_token / GIB
        plan.vllm = [
            Row(f"weights / TP {tp}", weights),
            Row("vLLM activations and buffers", VLLM_OVERHEAD_GIB),
            Row("KV cache (what is left of the share)", max(0.0, kv_avail),
                f"{kv_token / 1024:.0f} KiB/token; {plan.kv_sequences:.1f} full {seq_len}-token sequences at once; "
                f"all {plan.concurrency} in flight would need {need_all:.0f} GiB"),
        ]
        if v.max_model_len < seq_len:
            problems.append(Problem(f"rollout.vllm.max_model_len={v.max_model_len} is shorter than prompt + response "
                                    f"({r.max_prompt_tokens} + {r.max_new_tokens} = {seq_len})",
                                    f"set rollout.vllm.max_model_len={seq_len}"))
        if plan.kv_sequences < 1:
            held = "holds the weights" if kv_avail > 0 else "cannot hold the weights"
            problems.append(Problem(
                f"vLLM's share ({v.gpu_memory_utilization:g} x {gpu:g} GiB = {vllm_share:.1f} GiB) {held} "
                f"({weights:.1f} GiB){' but not' if kv_avail > 0 else ' nor'} the KV cache of one {seq_len}-token sequence",
                "raise rollout.vllm.gpu_memory_utilization or rollout.vllm.tensor_parallel_size, or lower "
                "rollout.max_new_tokens"))
        elif plan.kv_sequences < plan.concurrency:
            notes.append(f"the KV cache holds {plan.kv_sequences:.0f} of the {plan.concurrency} trajectories an engine "
                         "runs per step at full length; vLLM queues the rest (slower, not an error)")

    # -- phases: what is resident at the peak of each
    if placement in ("colocate", "local"):
        sleeping = placement == "colocate"  # colocated engines sleep (level 1) during the update on CUDA
        plan.phases["generation"] = states + vllm_share
        plan.phases["update"] = states + activations + (0.0 if sleeping else vllm_share)
    else:
        plan.phases["generation"] = states
        plan.phases["update"] = states + activations
        if placement == "server":
            plan.phases["rollout server GPU"] = vllm_share + RUNTIME_OVERHEAD_GIB * 0.5
    # Before DeepSpeed partitions a model, the rank holds it in full (no zero.Init). Under ZeRO-3 toolrl loads on
    # the host and DeepSpeed moves one model at a time to the GPU (critic first, then the policy); otherwise every
    # model sits on the GPU in full from the start. A reference model is a full, unsharded copy either way.
    full_policy, full_critic = dtype_bytes * P / GIB, dtype_bytes * critic_params / GIB
    ref = full_policy if a.kl_coef > 0 else 0.0
    if ds.zero_stage >= 3:
        critic_resident = sum(x.gib for x in plan.train if x.name.startswith("critic"))
        load = ref + max(full_critic if a.name == "ppo" else 0.0, full_policy + critic_resident)
    else:
        load = ref + full_policy + (full_critic if a.name == "ppo" else 0.0)
    plan.phases["model loading"] = load + RUNTIME_OVERHEAD_GIB
    for phase, used in plan.phases.items():
        if used > gpu:
            problems.append(Problem(f"the {phase} phase needs {used:.1f} GiB per GPU, over the {gpu:g} GiB available",
                                    _hint_for(phase, cfg, m, plan)))

    plan.times = _times(cfg, m, inputs, plan, dtype_bytes)
    return plan


def _divisor(n: int, near: int) -> int:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return min(divs, key=lambda d: (abs(d - near), -d))


def _hint_for(phase: str, cfg: "RootConfig", m: ModelShape, plan: Plan) -> str:
    ds, t, a = cfg.deepspeed, cfg.train, cfg.algo
    if phase == "model loading":
        if ds.zero_stage < 3:
            return f"set deepspeed.zero_stage=3 (now {ds.zero_stage}): each model is then partitioned as it loads"
        return ("every rank holds one model in full before ZeRO-3 partitions it: use GPUs with more memory or a "
                "smaller model" + (", or algo.kl_coef=0 (no reference copy)" if a.kl_coef > 0 else ""))
    if phase == "rollout server GPU":
        return "raise rollout.vllm.tensor_parallel_size of the servers or lower rollout.vllm.gpu_memory_utilization"
    if ds.zero_stage < 3:
        return f"set deepspeed.zero_stage=3 (now {ds.zero_stage})"
    if not t.gradient_checkpointing:
        return "set train.gradient_checkpointing=true"
    if not ds.offload_optimizer:
        return "set deepspeed.offload_optimizer=true"
    if a.micro_batch_size > 1:
        return f"lower algo.micro_batch_size (now {a.micro_batch_size})"
    if phase == "generation" and cfg.rollout.placement != "server":
        return "lower rollout.vllm.gpu_memory_utilization, or move rollouts to rollout.placement=server"
    return f"use more GPUs (--gpus/--nodes), or lower rollout.max_new_tokens (now {cfg.rollout.max_new_tokens})"


def _times(cfg: "RootConfig", m: ModelShape, inputs: PlanInputs, plan: Plan, dtype_bytes: int) -> dict[str, float]:
    """Seconds per step from the stated rates: decoding is memory-bound (each step reads the weight shard and the
    KV of the sequences in flight), the update compute-bound (6 FLOPs per parameter and token, 8 with gradient
    checkpointing; the critic again for PPO). Sandbox time, prefill and weight sync are not counted."""
    r, a, t = cfg.rollout, cfg.algo, cfg.train
    trajs = t.prompts_per_step * max(1, a.n_samples)
    resp = inputs.response_fill * r.max_new_tokens
    prompt = r.max_prompt_tokens / 2
    out: dict[str, float] = {"trajectories": float(trajs), "response_tokens": trajs * resp}
    P = m.total_params
    if r.backend == "vllm":
        weights_gpu = dtype_bytes * P / plan.tp
        kv_gpu = 2 * m.layers * max(1, math.ceil(m.kv_heads / plan.tp)) * m.head_size * dtype_bytes
        batch = max(1.0, min(float(plan.concurrency), plan.kv_sequences or 1.0))
        step_s = (weights_gpu + batch * (prompt + resp / 2) * kv_gpu) / (inputs.hbm_gbs * 1e9)
        per_engine = batch / step_s
        out["gen_tokens_per_s"] = per_engine * plan.engines
        out["generation_s"] = trajs * resp / out["gen_tokens_per_s"]
    flops_per_token = (8 if t.gradient_checkpointing else 6) * P * (2 if a.name == "ppo" else 1)
    if a.kl_coef > 0:
        flops_per_token += 2 * P
    tokens = trajs * (prompt + resp) * max(1, a.ppo_epochs)
    out["update_s"] = tokens * flops_per_token / (plan.train_gpus * inputs.gpu_tflops * 1e12 * inputs.mfu)
    out["step_s"] = out.get("generation_s", 0.0) + out["update_s"]
    return out


def preflight(cfg: "RootConfig", world_size: int, gpu_mem_gib: float, gpus_per_node: int) -> Plan | None:
    """The plan of a run about to start on GPUs, or None when the model's shape is unknown (nothing to check)."""
    from toolrl.errors import ToolrlError
    from toolrl.placement.shapes import model_shape

    try:
        shape = model_shape(cfg.model.path)
    except ToolrlError:
        return None
    nodes = max(1, world_size // max(1, gpus_per_node))
    # The launched ranks are the training GPUs; rollout servers (placement=server) run elsewhere.
    return make_plan(cfg, shape, PlanInputs(gpus_per_node=min(world_size, gpus_per_node), nodes=nodes,
                                            gpu_mem_gib=gpu_mem_gib, rollout_gpus=0))


__all__ = ["Plan", "PlanInputs", "Row", "activation_bytes", "host_bytes_per_node", "make_plan",
           "model_state_bytes", "preflight"]
