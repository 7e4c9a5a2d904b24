"""Run tracking: the local metrics store (source of truth), W&B, and per-step rollout metrics.

wandb is imported only when a Tracker starts a W&B run.
"""

from toolrl.tracking.metrics import rollout_metrics
from toolrl.tracking.store import METRICS_FILE, MetricsStore, read
from toolrl.tracking.tracker import Tracker, rollouts_path, wandb_logged_in, wandb_mode

__all__ = [
    "METRICS_FILE",
    "MetricsStore",
    "Tracker",
    "read",
    "rollout_metrics",
    "rollouts_path",
    "wandb_logged_in",
    "wandb_mode",
]
