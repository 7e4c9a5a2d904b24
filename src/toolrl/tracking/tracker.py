"""Tracker: every metric goes to the local store, and to Weights & Biases when ``tracking.wandb`` is on.

W&B mode: ``WANDB_MODE`` when the user set it; otherwise online when logged in (``WANDB_API_KEY`` or a netrc
entry for the W&B host) and offline when not, so a run never stops to ask for a key. A W&B failure never stops
training: it is logged once and the run continues with the local store, which is the source of truth anyway.
Create one Tracker per run, on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlparse

from toolrl.tracking.store import MetricsStore

if TYPE_CHECKING:
    from toolrl.config.schema import RootConfig
    from toolrl.types import Trajectory

log = logging.getLogger("toolrl.tracking")

RUN_ID_FILE = "wandb_run_id"
ROLLOUTS_DIR = "rollouts"


def rollouts_path(run_dir: str | Path, step: int) -> Path:
    """Where the sampled trajectories of training step ``step`` are saved."""
    return Path(run_dir) / ROLLOUTS_DIR / f"step_{step:06d}.jsonl"


def wandb_logged_in(env: Mapping[str, str] | None = None) -> bool:
    """True when W&B credentials exist: WANDB_API_KEY, or a netrc entry (NETRC or ~/.netrc) for the W&B host."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = env.get("NETRC") or str(Path(env.get("HOME", str(Path.home()))) / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(env: Mapping[str, str] | None = None) -> str:
    """The W&B mode a run uses: an explicit WANDB_MODE wins, else online if logged in, else offline."""
    env = os.environ if env is None else env
    explicit = env.get("WANDB_MODE", "").strip().lower()
    if explicit:
        return {"dryrun": "offline", "run": "online"}.get(explicit, explicit)
    return "online" if wandb_logged_in(env) else "offline"


def _spread(items: list[Any], k: int) -> list[Any]:
    """k items evenly spaced over the list (the batch is ordered by problem, so the first k would be one problem)."""
    if k >= len(items):
        return list(items)
    if k <= 0:
        return []
    return [items[(i * len(items)) // k] for i in range(k)]


class Tracker:
    """Logs step metrics and rollout samples for one run.

    ``resume=True`` continues the W&B run whose id is saved in ``run_dir/wandb_run_id``; after loading a
    checkpoint call :meth:`rewind` so the steps that are about to be re-run are not recorded twice.
    """

    def __init__(self, cfg: "RootConfig", run_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.store = MetricsStore(self.run_dir)
        self.max_rollouts = int(cfg.train.log_rollouts)
        self._wandb: Any = None  # the wandb module, once a run is live
        self._run: Any = None
        if cfg.tracking.wandb:
            self._start_wandb(resume)

    @property
    def wandb_run(self) -> Any:
        """The live wandb Run, or None when W&B is off or failed to start."""
        return self._run

    def _start_wandb(self, resume: bool) -> None:
        mode = wandb_mode()
        if mode == "disabled":
            return
        id_file = self.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else ""
        if not run_id and os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
            # Inside a W&B sweep agent's trial the run already exists: log into it, not into a new one.
            run_id = os.environ["WANDB_RUN_ID"]
            id_file.write_text(run_id + "\n")
        if not run_id:
            run_id = uuid.uuid4().hex[:12]
            # Saved before init: a run killed during start-up still resumes into the same W&B run.
            id_file.write_text(run_id + "\n")
        try:
            import wandb

            from toolrl.config.loader import config_to_dict

            t = self.cfg.tracking
            self._run = wandb.init(
                project=t.project,
                entity=t.entity,
                group=t.group,
                tags=list(t.tags) or None,
                name=self.cfg.run.name or self.run_dir.name,
                dir=str(self.run_dir),
                id=run_id,
                resume="allow",
                mode=mode,  # type: ignore[arg-type]
                config=config_to_dict(self.cfg),
                settings=wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True),
            )
            # Our step is a metric, not W&B's internal counter: after a resume W&B would drop re-logged steps.
            self._run.define_metric("step")
            self._run.define_metric("*", step_metric="step")
            self._wandb = wandb
        except Exception as e:  # noqa: BLE001 - tracking must never take training down
            log.warning("W&B disabled for this run (%s: %s); metrics.jsonl still records everything",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self._run = None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = self.store.log(step, metrics)
        if self._run is not None:
            payload = {k: v for k, v in record.items() if k != "time" and v is not None}
            self._safe(lambda: self._run.log(payload))

    def log_rollouts(self, step: int, trajectories: list["Trajectory"]) -> Path | None:
        """Save up to ``train.log_rollouts`` trajectories (spread over the batch) to ``rollouts/step_NNNNNN.jsonl``
        and as a W&B table. Returns the file written, or None when rollout logging is off."""
        sample = _spread(list(trajectories), self.max_rollouts)
        if not sample:
            return None
        path = rollouts_path(self.run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for t in sample:
                fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)  # `toolrl inspect rollout` never sees half a file
        if self._run is not None:
            self._safe(lambda: self._run.log({"step": step, "rollouts": self._table(step, sample)}))
        return path

    def _table(self, step: int, trajs: list["Trajectory"]) -> Any:
        columns = ["step", "problem_id", "sample", "reward", "correct", "calls", "finish", "answer", "response"]
        rows = [
            [step, t.problem.id, t.sample_index, t.reward, t.correct, t.num_calls, t.finish_reason,
             t.problem.answer, t.response_text]
            for t in trajs
        ]
        return self._wandb.Table(columns=columns, data=rows)

    def rewind(self, step: int) -> int:
        """Forget local records after ``step`` (resume from that checkpoint); returns how many were dropped."""
        return self.store.rewind(step)

    def finish(self) -> None:
        self.store.close()
        if self._run is not None:
            run, self._run = self._run, None
            self._safe(run.finish)

    def _safe(self, fn: Any) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            log.warning("W&B call failed (%s); continuing with metrics.jsonl only", type(e).__name__)
            self._run = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
