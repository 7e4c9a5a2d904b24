"""Load a config from YAML files and ``key=value`` overrides, and validate it before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from toolrl.config.schema import RootConfig
from toolrl.errors import ConfigError

# Configs shipped with the project; `toolrl train --config torl_1p5b` finds configs/torl_1p5b.yaml.
_PROJECT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


def all_keys(cls: type = RootConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf key of the schema as a dotted path, mapped to its dataclass field."""
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            out.update(all_keys(type(sub), path + "."))
        else:
            out[path] = f
    return out


def _closest(key: str) -> str | None:
    keys = list(all_keys())
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not match:  # a typo in the last part only: compare leaf names
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        m = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[m[0]]] if m else []
    return match[0] if match else None


def _unknown_key_error(key: str) -> ConfigError:
    best = _closest(key)
    hint = f"did you mean '{best}'?" if best else "run `toolrl config show` to list every key"
    return ConfigError(f"unknown config key '{key}'", hint)


def resolve_config_path(path: str | Path) -> Path:
    """A config argument may be a path or the name of a config shipped in configs/."""
    p = Path(path)
    if p.is_file():
        return p
    # The project's configs/ (editable install), then ./configs (a checkout used with a regular install).
    roots = (_PROJECT_CONFIG_DIR, Path.cwd() / "configs")
    for cand in (c for root in roots for c in (root / f"{p}.yaml", root / p)):
        if cand.is_file():
            return cand
    raise ConfigError(f"config file '{path}' not found", "give a path to a YAML file or a name from configs/")


def _parse_overrides(overrides: Iterable[str]) -> DictConfig:
    items = list(overrides)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value", "e.g. tool.max_calls=2")
        key = item.split("=", 1)[0].strip()
        if key not in all_keys() and not any(k.startswith(key + ".") for k in all_keys()):
            raise _unknown_key_error(key)
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides: {e}".splitlines()[0]) from None


def _check_unknown(node: Any, prefix: str = "") -> None:
    if not isinstance(node, DictConfig):
        return
    keys = all_keys()
    for k in node.keys():
        path = f"{prefix}{k}"
        if path in keys:
            continue
        if any(x.startswith(path + ".") for x in keys):
            _check_unknown(node[k], path + ".")
            continue
        raise _unknown_key_error(path)


def _validation_message(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    if key:
        f = all_keys().get(str(key))
        want = f.type if f is not None else "?"
        return f"config key '{key}': {msg} (expected {want})"
    return msg


def _check_values(cfg: RootConfig) -> None:
    """Choices and ranges the types alone cannot express."""
    node = OmegaConf.structured(cfg)  # built once: it is the costly part of validation
    for key, f in all_keys().items():
        choices = f.metadata.get("choices")
        if not choices:
            continue
        value = OmegaConf.select(node, key)
        if value not in choices:
            allowed = ", ".join(map(str, choices))
            raise ConfigError(f"config key '{key}' is {value!r}; allowed: {allowed}", f"set {key}=<one of: {allowed}>")

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}' must be {what}", f"fix it, e.g. {key}=<{what}>")

    need(cfg.tool.max_calls >= -1, "tool.max_calls", ">= -1 (0 = no execution, -1 = no cap)")
    need(cfg.tool.timeout_s > 0, "tool.timeout_s", "> 0 seconds")
    need(cfg.tool.max_output_chars >= 16, "tool.max_output_chars", ">= 16")
    need(cfg.rollout.max_new_tokens > 0, "rollout.max_new_tokens", "> 0")
    need(cfg.rollout.temperature >= 0, "rollout.temperature", ">= 0")
    need(0 < cfg.rollout.top_p <= 1, "rollout.top_p", "in (0, 1]")
    need(cfg.rollout.batch_size > 0, "rollout.batch_size", "> 0")
    need(cfg.sandbox.pool_size > 0, "sandbox.pool_size", "> 0")
    need(cfg.sandbox.retries >= 0, "sandbox.retries", ">= 0")
    need(cfg.eval.n > 0, "eval.n", "> 0")
    need(cfg.eval.limit is None or cfg.eval.limit > 0, "eval.limit", "> 0")
    need(cfg.algo.n_samples > 0, "algo.n_samples", "> 0")
    need(cfg.algo.clip_low >= 0 and cfg.algo.clip_high >= 0, "algo.clip_low/clip_high", ">= 0")
    a = cfg.algo  # the stabilisers' ranges (docs/algorithms.md)
    need(a.dual_clip_c is None or a.dual_clip_c > 1, "algo.dual_clip_c", "> 1 (verl: 3) or empty")
    need(a.kl_clamp is None or a.kl_clamp > 0, "algo.kl_clamp", "> 0 (verl: 10) or empty")
    need(a.loss_agg_norm is None or a.loss_agg_norm > 0, "algo.loss_agg_norm", "> 0 tokens or empty")
    need(0 <= a.overlong_buffer < cfg.rollout.max_new_tokens, "algo.overlong_buffer", ">= 0 and < rollout.max_new_tokens")
    need(a.roc_oversample == 0 or a.roc_oversample > a.n_samples, "algo.roc_oversample", "0 or > algo.n_samples")
    need(a.tis_cap is None or a.tis_cap > 0, "algo.tis_cap", "> 0 (TIS: 2) or empty")
    need(a.tis_seq_threshold is None or a.tis_seq_threshold > 1, "algo.tis_seq_threshold", "> 1 or empty")
    need(cfg.train.steps >= 0, "train.steps", ">= 0")
    need(cfg.train.prompts_per_step > 0, "train.prompts_per_step", "> 0")
    need(cfg.train.lr > 0, "train.lr", "> 0")
    _check_cross_fields(cfg)


def _check_cross_fields(cfg: RootConfig) -> None:
    """Rules that relate several keys (or that only training cares about), checked wherever a config is built,
    so `toolrl sweep --dry-run` rejects every run that `toolrl train` would reject. Checks that need the number
    of processes stay in the trainer."""
    a, t = cfg.algo, cfg.train
    if a.micro_batch_size <= 0 or a.mini_batch_size <= 0:
        raise ConfigError("algo.mini_batch_size and algo.micro_batch_size must be > 0", "e.g. algo.micro_batch_size=4")
    if a.ppo_epochs <= 0:
        raise ConfigError("algo.ppo_epochs must be > 0", "algo.ppo_epochs=1 is on-policy")
    if t.save_every <= 0:
        raise ConfigError("train.save_every must be > 0", "e.g. train.save_every=5")
    if a.name in ("grpo", "rloo") and a.n_samples < 2:
        raise ConfigError(f"algo.name={a.name} needs algo.n_samples >= 2",
                          "group baselines need siblings, e.g. algo.n_samples=8")
    if a.dual_clip_c is not None and a.dual_clip_c <= 1:
        raise ConfigError(f"algo.dual_clip_c={a.dual_clip_c} must be > 1", "verl's ReTool recipe uses algo.dual_clip_c=10")
    if cfg.sft.batch_size <= 0 or cfg.sft.epochs < 0:
        raise ConfigError("sft.batch_size must be > 0 and sft.epochs >= 0", "e.g. sft.batch_size=8 sft.epochs=1")
    if cfg.rollout.max_prompt_tokens <= 0:
        raise ConfigError("rollout.max_prompt_tokens must be > 0", "e.g. rollout.max_prompt_tokens=512")
    if cfg.prompt.file:
        from toolrl.rollout.prompts import load_template_file  # pure text logic; a missing file fails here, not mid-run

        load_template_file(cfg.prompt.file)


def load_config(
    paths: str | Path | Iterable[str | Path] | None = None, overrides: Iterable[str] = ()
) -> RootConfig:
    """Merge schema defaults <- YAML files (in order) <- dotlist overrides; validate; return typed config.

    Raises ConfigError (one line + hint) for unknown keys, wrong types and values out of range.
    """
    if paths is None:
        path_list: list[str | Path] = []
    elif isinstance(paths, (str, Path)):
        path_list = [paths]
    else:
        path_list = list(paths)
    base = OmegaConf.structured(RootConfig)
    layers: list[DictConfig] = []
    for p in path_list:
        resolved = resolve_config_path(p)
        try:
            loaded = OmegaConf.load(resolved)
        except Exception as e:  # yaml syntax errors carry multi-line messages
            raise ConfigError(f"cannot read {resolved}: {str(e).splitlines()[0]}", "check the YAML syntax") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{resolved} must contain a mapping of config sections")
        _check_unknown(loaded)
        layers.append(loaded)
    layers.append(_parse_overrides(overrides))
    try:
        merged = OmegaConf.merge(base, *layers)
        cfg = OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        raise _unknown_key_error(str(getattr(e, "full_key", "") or e)) from None
    except ValidationError as e:
        raise ConfigError(_validation_message(e), "check the value's type in `toolrl config show`") from None
    except OmegaConfBaseException as e:
        raise ConfigError(_validation_message(e)) from None
    assert isinstance(cfg, RootConfig)
    _check_values(cfg)
    return cfg


def config_to_yaml(cfg: RootConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_to_dict(cfg: RootConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]


def save_config(cfg: RootConfig, path: str | Path) -> None:
    """Write the fully resolved config (every key, defaults included) next to a run's results."""
    Path(path).write_text(config_to_yaml(cfg))


def flatten(cfg: RootConfig) -> dict[str, Any]:
    """Dotted key -> value for every leaf (W&B config, sweep tables)."""
    node = OmegaConf.structured(cfg)
    return {k: OmegaConf.select(node, k) for k in all_keys()}


__all__ = ["load_config", "save_config", "config_to_yaml", "config_to_dict", "flatten", "all_keys", "MISSING"]
