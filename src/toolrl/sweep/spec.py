"""Sweep files: parse and check a sweep YAML, and expand it into runs with stable names.

Pure: reads YAML and the config schema, starts nothing. A sweep file looks like::

    name: max_calls                 # W&B group and default directory name
    base:
      config: [my_base.yaml]        # config files (relative to the sweep file, or names in configs/);
                                    # default: configs/default.yaml, like `toolrl train`
      overrides: {train.steps: 12}  # key: value applied to every run
    axes:
      tool.max_calls: [0, 1, 2]     # any config key; `seed` is short for run.seed
    combine: grid                   # grid = every combination; zip = i-th values together
    seeds: [0, 1]                   # repeats of every point (sets run.seed); an int n means 0..n-1
    eval: {benchmarks: [arith], n: 1, limit: 100}

Each run is validated by loading its full config (``load_config``), so a typo in any key or a value of the wrong
type fails before the first run starts, with the closest valid key as the hint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from toolrl.config.loader import all_keys, load_config, resolve_config_path
from toolrl.errors import ConfigError, ToolrlError

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig

SPEC_FIELDS = ("name", "description", "base", "axes", "combine", "seeds", "eval")
BASE_FIELDS = ("config", "overrides")
EVAL_FIELDS = ("benchmarks", "n", "limit", "protocol", "temperature", "top_p")
AXIS_ALIASES = {"seed": "run.seed"}  # short names the issue promised users
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class SweepSpecError(ToolrlError):
    """A sweep file is malformed (unknown field, empty axis, unknown config key, duplicate run name)."""


@dataclass(frozen=True)
class Axis:
    key: str  # full dotted config key
    values: tuple[Any, ...]
    label: str  # short name used in run names and tags, e.g. max_calls


@dataclass(frozen=True)
class EvalSpec:
    benchmarks: tuple[str, ...] = ()
    n: int | None = None
    limit: int | None = None
    temperature: float | None = None
    top_p: float | None = None

    @property
    def trainer_bench(self) -> str | None:
        """The benchmark the trainer evaluates itself at the end (its evaluation is greedy, so only then)."""
        return self.benchmarks[0] if self.benchmarks and self.n in (None, 1) else None

    @property
    def extra_benchmarks(self) -> tuple[str, ...]:
        """Benchmarks evaluated after training by `toolrl eval` on the final model."""
        return self.benchmarks[1:] if self.trainer_bench else self.benchmarks

    def overrides(self) -> list[str]:
        """eval.* overrides: the trainer's final evaluation, and the settings `toolrl eval` reads back."""
        out: list[str] = []
        if self.benchmarks:
            out.append(f"eval.bench={format_value(self.benchmarks[0])}")
        if self.trainer_bench:
            out.append(f"eval.during_train_bench={format_value(self.trainer_bench)}")
            if self.limit is not None:
                out.append(f"eval.during_train_limit={format_value(self.limit)}")
        for key in ("n", "limit", "temperature", "top_p"):
            value = getattr(self, key)
            if value is not None:
                out.append(f"eval.{key}={format_value(value)}")
        return out


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: what makes it different and everything needed to start it."""

    name: str  # stable, filesystem-safe, e.g. max_calls=2__seed=0
    point: str  # the name without the seed: runs sharing a point are repeats
    values: dict[str, Any]  # axis key -> value (seed included as run.seed)
    seed: int
    config_files: tuple[str, ...]
    overrides: tuple[str, ...]  # base, axis, seed, eval and tracking overrides, in that order (later wins)
    tags: tuple[str, ...]
    extra_benchmarks: tuple[str, ...] = ()  # evaluated after training by `toolrl eval` (see EvalSpec)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    axes: tuple[Axis, ...]
    combine: str = "grid"
    seeds: tuple[int, ...] = (0,)
    config_files: tuple[str, ...] = ()
    base_overrides: tuple[str, ...] = ()
    eval: EvalSpec = field(default_factory=EvalSpec)
    description: str = ""

    def make_run(self, values: Mapping[str, Any], seed: int) -> RunPlan:
        """The run for one axis point and seed; the local runner and the W&B agent both build runs here."""
        parts = [f"{a.label}={format_label(values[a.key])}" for a in self.axes if a.key != "run.seed"]
        point = "__".join(parts) or "base"
        name = sanitize(f"{point}__seed={seed}" if parts else f"seed={seed}")
        tags = tuple(p[:64] for p in parts) + (f"seed={seed}",)  # W&B caps tags at 64 characters
        overrides = [*self.base_overrides]
        overrides += [f"{a.key}={format_value(values[a.key])}" for a in self.axes if a.key != "run.seed"]
        overrides.append(f"run.seed={seed}")
        overrides += self.eval.overrides()
        overrides += [
            f"tracking.group={format_value(self.name)}",
            f"tracking.tags=[{','.join(json.dumps(t) for t in tags)}]",
        ]
        return RunPlan(
            name=name,
            point=sanitize(point),
            values={**values, "run.seed": seed},
            seed=seed,
            config_files=self.config_files,
            overrides=tuple(overrides),
            tags=tags,
            extra_benchmarks=self.eval.extra_benchmarks,
        )

    def points(self) -> list[dict[str, Any]]:
        """Axis points (without seeds) in file order: grid = cartesian product, zip = i-th values together."""
        keys = [a.key for a in self.axes if a.key != "run.seed"]
        columns = [a.values for a in self.axes if a.key != "run.seed"]
        if not keys:
            return [{}]
        rows = itertools.product(*columns) if self.combine == "grid" else zip(*columns)
        return [dict(zip(keys, row)) for row in rows]

    def seed_values(self) -> tuple[int, ...]:
        seed_axis = [a for a in self.axes if a.key == "run.seed"]
        return tuple(int(v) for v in seed_axis[0].values) if seed_axis else self.seeds

    def runs(self) -> list[RunPlan]:
        """Every run, ordered point by point, seeds innermost."""
        runs = [self.make_run(p, s) for p in self.points() for s in self.seed_values()]
        seen: dict[str, RunPlan] = {}
        for r in runs:
            if r.name in seen:
                raise SweepSpecError(
                    f"two runs of sweep '{self.name}' get the same name '{r.name}'",
                    "axis values must differ after formatting (e.g. 0.5 and '0.5' collide)",
                )
            seen[r.name] = r
        return runs

    def to_dict(self) -> dict[str, Any]:
        """Normalised form (the copy kept in the sweep directory; config paths are absolute)."""
        return {
            "name": self.name,
            "description": self.description,
            "base": {"config": list(self.config_files), "overrides": list(self.base_overrides)},
            "axes": {a.key: list(a.values) for a in self.axes},
            "combine": self.combine,
            "seeds": list(self.seeds),
            "eval": {k: v for k, v in (
                ("benchmarks", list(self.eval.benchmarks)), ("n", self.eval.n), ("limit", self.eval.limit),
                ("temperature", self.eval.temperature), ("top_p", self.eval.top_p)) if v not in (None, [])},
        }

    def fingerprint(self) -> str:
        """Hash of everything that changes what the runs do (not the description)."""
        d = self.to_dict()
        d.pop("description")
        d["axes"] = list(d["axes"].items())  # axis order decides run names, so it must count
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- formatting


def format_value(value: Any) -> str:
    """A value as the right-hand side of a ``key=value`` override that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    s = str(value)
    # Quote strings YAML would read as something else ("1", "true", "null") or that contain syntax.
    try:
        plain = yaml.safe_load(s) == s and not re.search(r"[\s,\[\]{}:#'\"$]", s)
    except yaml.YAMLError:
        plain = False
    return s if plain else json.dumps(s)


def format_label(value: Any) -> str:
    """A value as it appears in a run name: true/false, null, -0.5, a path's file name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and "/" in value:
        value = Path(value).stem or value
    return str(value)


def sanitize(name: str) -> str:
    """Filesystem-safe on every OS we care about: letters, digits and ._=+- only."""
    out = _SAFE.sub("-", name).strip("-.")
    return out[:200] or "run"


# ---------------------------------------------------------------- parsing


def _need(ok: bool, message: str, hint: str) -> None:
    if not ok:
        raise SweepSpecError(message, hint)


def _unknown(where: str, keys: Sequence[str], allowed: Sequence[str]) -> None:
    bad = [k for k in keys if k not in allowed]
    _need(not bad, f"unknown field '{bad[0] if bad else ''}' in {where}", f"allowed: {', '.join(allowed)}")


def _overrides_list(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple(f"{AXIS_ALIASES.get(str(k), k)}={format_value(v)}" for k, v in raw.items())
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise SweepSpecError("base.overrides must be a mapping of key: value (or a list of 'key=value')",
                         "e.g. overrides: {train.steps: 12, tool.max_calls: 1}")


def _seeds(raw: Any) -> tuple[int, ...]:
    if raw is None:
        return (0,)
    if isinstance(raw, bool):
        raw = None  # fall through to the error below
    if isinstance(raw, int):
        _need(raw > 0, f"seeds: {raw} repeats is not positive", "seeds: 3 runs seeds 0, 1, 2; or list them")
        return tuple(range(raw))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        _need(len(set(raw)) == len(raw), "seeds repeat a value", "list each seed once")
        return tuple(raw)
    raise SweepSpecError(f"seeds must be a positive int or a non-empty list of ints, got {raw!r}", "e.g. seeds: [0, 1, 2]")


def _axes(raw: Any, combine: str = "grid") -> tuple[Axis, ...]:
    _need(isinstance(raw, Mapping) and len(raw) > 0, "the sweep has no axes",
          "add e.g. axes: {tool.max_calls: [0, 1, 2]}")
    keys = list(all_keys())
    out: list[tuple[str, tuple[Any, ...]]] = []
    for k, values in raw.items():
        key = AXIS_ALIASES.get(str(k), str(k))
        if key not in keys:
            # The loader knows the closest valid key; reuse its message and hint.
            try:
                load_config(None, [f"{key}=0"])
            except ConfigError as e:
                raise SweepSpecError(f"axis '{k}': {e.message}", e.hint) from None
        _need(isinstance(values, list), f"axis '{k}' must be a list of values", f"e.g. {k}: [0, 1, 2]")
        _need(len(values) > 0, f"axis '{k}' is empty", "give it at least one value, or remove it")
        _need(all(not isinstance(v, (dict, list)) for v in values), f"axis '{k}' values must be scalars",
              "one config value per run; use combine: zip to move several keys together")
        # zip rows may share a value on one axis (off / A alone / B alone); the rows themselves must differ
        if combine == "grid" or key == "run.seed":
            _need(len({json.dumps(v) for v in values}) == len(values), f"axis '{k}' repeats a value",
                  "list each value once")
        out.append((key, tuple(values)))
    _need(len({k for k, _ in out}) == len(out), "an axis is listed twice (seed and run.seed are the same key)",
          "keep one")
    leafs = [k.rsplit(".", 1)[-1] for k, _ in out]
    # Short labels unless two axes share a leaf name (e.g. rollout.temperature and eval.temperature).
    return tuple(Axis(k, v, k.rsplit(".", 1)[-1] if leafs.count(k.rsplit(".", 1)[-1]) == 1 else k) for k, v in out)


def _eval(raw: Any) -> EvalSpec:
    if raw is None:
        return EvalSpec()
    _need(isinstance(raw, Mapping), "eval must be a mapping", "e.g. eval: {benchmarks: [arith], n: 1, limit: 100}")
    _unknown("eval", list(raw), EVAL_FIELDS)
    benches = raw.get("benchmarks") or []
    if isinstance(benches, str):
        benches = [benches]
    _need(isinstance(benches, list) and all(isinstance(b, str) for b in benches),
          "eval.benchmarks must be a list of benchmark names or JSONL paths", "e.g. benchmarks: [arith, math500]")
    n = raw.get("n")
    protocol = raw.get("protocol")
    if protocol is not None:
        m = re.fullmatch(r"greedy|avg@(\d+)", str(protocol))
        _need(m is not None, f"eval.protocol '{protocol}' is not greedy or avg@k", "e.g. protocol: greedy, or avg@32")
        k = 1 if protocol == "greedy" else int(m.group(1))  # type: ignore[union-attr]
        _need(n is None or n == k, f"eval.protocol {protocol} contradicts eval.n={n}", "give one of them")
        n = k
    return EvalSpec(tuple(benches), n, raw.get("limit"), raw.get("temperature"), raw.get("top_p"))


DEFAULT_BASE = "default"  # configs/default.yaml, what `toolrl train` loads when given no --config


def _default_base() -> list[str]:
    try:
        resolve_config_path(DEFAULT_BASE)
    except ConfigError:
        return []
    return [DEFAULT_BASE]


def parse_spec(raw: Any, base_dir: Path | None = None, default_name: str = "sweep") -> SweepSpec:
    """Build a SweepSpec from the parsed YAML mapping; config paths are resolved relative to base_dir."""
    _need(isinstance(raw, Mapping), "a sweep file must be a mapping", "see sweeps/max_calls.yaml for the shape")
    _unknown("the sweep file", list(raw), SPEC_FIELDS)
    name = sanitize(str(raw.get("name") or default_name))
    base = raw.get("base") or {}
    _need(isinstance(base, Mapping), "base must be a mapping", "e.g. base: {config: [file.yaml], overrides: {...}}")
    _unknown("base", list(base), BASE_FIELDS)
    # No `config:` means the base `toolrl train` itself uses without --config, so a sweep run is exactly
    # `toolrl train key=value ...`; `config: []` means the schema defaults alone.
    files = base["config"] if "config" in base else _default_base()
    files = [files] if isinstance(files, str) else list(files or [])
    resolved: list[str] = []
    for f in files:
        p = Path(f)
        if not p.is_absolute() and base_dir is not None and (base_dir / p).is_file():
            p = base_dir / p
        resolved.append(str(resolve_config_path(p).resolve()))
    combine = raw.get("combine", "grid")
    _need(combine in ("grid", "zip"), f"combine '{combine}' is not grid or zip", "grid = every combination")
    axes = _axes(raw.get("axes"), combine)
    if combine == "zip":
        lengths = {len(a.values) for a in axes if a.key != "run.seed"}
        _need(len(lengths) <= 1, "combine: zip needs every axis to have the same number of values",
              "use combine: grid, or make the lists the same length")
        rows = [json.dumps(r) for r in zip(*(a.values for a in axes if a.key != "run.seed"))]
        _need(len(set(rows)) == len(rows), "combine: zip gives two identical runs (the same value on every axis)",
              "make every column of the axes differ in at least one key")
    seed_axis = any(a.key == "run.seed" for a in axes)
    _need(not (seed_axis and "seeds" in raw), "both a seed axis and seeds: are given", "keep one of them")
    return SweepSpec(
        name=name,
        axes=axes,
        combine=combine,
        seeds=_seeds(raw.get("seeds")),
        config_files=tuple(resolved),
        base_overrides=_overrides_list(base.get("overrides")),
        eval=_eval(raw.get("eval")),
        description=str(raw.get("description") or ""),
    )


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file (syntax and structure only; call validate_runs before starting anything)."""
    p = Path(path)
    if not p.is_file():
        shipped = Path(__file__).resolve().parents[3] / "sweeps" / f"{path}.yaml"
        if not shipped.is_file():
            raise SweepSpecError(f"sweep file '{path}' not found", "give a path to a YAML file, e.g. sweeps/max_calls.yaml")
        p = shipped
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepSpecError(f"cannot read {p}: {str(e).splitlines()[0]}", "check the YAML syntax") from None
    return parse_spec(raw, base_dir=p.parent, default_name=p.stem)


def validate_runs(spec: SweepSpec) -> list[tuple[RunPlan, "RootConfig"]]:
    """Expand the sweep and load every run's full config, so every key and value is checked before any run."""
    out = []
    for run in spec.runs():
        try:
            out.append((run, load_config(list(run.config_files), list(run.overrides))))
        except ConfigError as e:
            raise SweepSpecError(f"run '{run.name}': {e.message}", e.hint) from None
    return out
