"""Ablation sweeps: sweep files -> runs (spec), the shared trial function, local and W&B runners, summaries.

Importing this package loads no engine and no wandb; the runners and plots import what they need when called.
"""

from toolrl.sweep.spec import RunPlan, SweepSpec, SweepSpecError, load_spec, parse_spec, validate_runs

__all__ = ["RunPlan", "SweepSpec", "SweepSpecError", "load_spec", "parse_spec", "validate_runs"]
