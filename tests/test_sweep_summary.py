"""Summary numbers checked against hand-written metrics files, and the plots/page it writes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from toolrl.sweep.local import prepare_sweep_dir
from toolrl.sweep.report import table_rows, write_report
from toolrl.sweep.spec import parse_spec
from toolrl.sweep.status import RunStatus, write_status
from toolrl.sweep.summary import accuracy_key, load_runs, summarize

SPEC = {"name": "abl", "axes": {"tool.max_calls": [0, 2]}, "seeds": [0, 1], "eval": {"benchmarks": ["arith", "gsm8k"]}}


def write_run(sweep_dir: Path, name: str, records: list[dict], state: str = "finished", extra: dict | None = None):
    d = sweep_dir / "runs" / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 99, "broken')
    write_status(d, RunStatus(name=name, state=state))
    if extra:
        (d / "eval" / "gsm8k").mkdir(parents=True)
        (d / "eval" / "gsm8k" / "results.json").write_text(json.dumps({"metrics": extra}))


def train_records(code_share: list[float], step_s: list[float], acc_final: float) -> list[dict]:
    # Cold-start SFT logs at step 0 with its own time/step_s: not an RL step, must not count.
    recs = [{"step": 0, "time": 99.0, "sft/loss": 0.5, "time/step_s": 500.0, "acc": 1.0}]
    for i, (cs, t) in enumerate(zip(code_share, step_s), start=1):
        recs.append({"step": i, "time": 100.0 + i, "reward/mean": 0.1 * i, "acc": 0.05 * i, "code/share": cs,
                     "code/success_rate": 0.5, "code/calls_per_response": 2 * cs, "response/len": 100 + i,
                     "time/step_s": t})
    recs.append({"step": len(code_share), "time": 200.0, "eval/arith/acc": 0.0, "eval/arith/pass@1": 0.9})
    recs.append({"step": len(code_share), "time": 201.0, "eval/arith/acc": acc_final})  # the last value wins
    return recs


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    spec = parse_spec(SPEC)
    prepare_sweep_dir(spec, tmp_path)
    names = [r.name for r in spec.runs()]
    assert names == ["max_calls=0__seed=0", "max_calls=0__seed=1", "max_calls=2__seed=0", "max_calls=2__seed=1"]
    write_run(tmp_path, names[0], train_records([0, 0, 0, 0, 0, 0], [5, 1, 1, 1, 1, 1], 0.30), extra={"acc": 0.2})
    write_run(tmp_path, names[1], train_records([0, 0, 0, 0, 0, 0], [5, 2, 2, 2, 2, 2], 0.40), extra={"acc": 0.4})
    # Resumed run: steps 3 and 4 were logged twice; the later records count.
    recs = train_records([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [9, 3, 3, 3, 3, 3], 0.60)
    dup = [dict(r, **{"code/share": 0.0}) for r in recs[2:4]]
    write_run(tmp_path, names[2], recs[:4] + dup + recs[2:], extra={"acc": 0.7})
    write_run(tmp_path, names[3], train_records([1.0] * 6, [4] * 6, 0.99), state="failed")
    return tmp_path


def test_numbers_match_the_metrics_files(sweep_dir):
    spec, runs = load_runs(sweep_dir)
    p0, p2 = summarize(runs, tail=5)
    assert (p0.point, p2.point) == ("max_calls=0", "max_calls=2")
    assert p0.values == {"tool.max_calls": 0}
    # Final accuracy: mean and sample std over seeds of the last eval/arith/acc.
    s = p0.metrics["eval/arith/acc"]
    assert s.n == 2 and s.mean == pytest.approx(0.35) and s.std == pytest.approx(statistics.stdev([0.3, 0.4]))
    assert p0.metrics["eval/gsm8k/acc"].mean == pytest.approx(0.3)  # from eval/gsm8k/results.json
    # The failed seed of max_calls=2 is not counted.
    assert p2.counted == 1 and p2.metrics["eval/arith/acc"].n == 1 and p2.metrics["eval/arith/acc"].std == 0.0
    assert p2.metrics["eval/arith/acc"].mean == pytest.approx(0.6)
    # Training metrics: mean of the last 5 steps (2..6), duplicates resolved to the later record.
    assert p2.metrics["code/share"].mean == pytest.approx(statistics.fmean([0.2, 0.3, 0.4, 0.5, 0.6]))
    assert p2.metrics["code/calls_per_response"].mean == pytest.approx(2 * 0.4)
    assert p2.metrics["response/len"].mean == pytest.approx(104.0)
    assert p0.metrics["code/share"].mean == 0.0
    # Time per step: median per run (start-up step ignored), then mean over seeds.
    assert p0.metrics["time/step_s"].mean == pytest.approx(1.5)
    assert p2.metrics["time/step_s"].mean == pytest.approx(3.0)
    # Including unfinished runs brings the failed seed in.
    p2_all = summarize(runs, tail=5, include_unfinished=True)[1]
    assert p2_all.counted == 2 and p2_all.metrics["eval/arith/acc"].mean == pytest.approx((0.6 + 0.99) / 2)


def test_table_and_report_files(sweep_dir):
    spec, runs = load_runs(sweep_dir)
    points = summarize(runs)
    header, rows = table_rows(spec, points)
    assert header[:3] == ["max_calls", "runs", "arith acc"]
    assert rows[0][:3] == ["0", "2/2", "0.350 ± 0.071"]
    assert rows[1][:3] == ["2", "1/2", "0.600"]
    data = write_report(spec, runs, points, sweep_dir, tail=5)
    for name in ("curves.png", "final_vs_max_calls.png"):
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (sweep_dir / "index.html").read_text()
    assert "curves.png" in page and "final_vs_max_calls.png" in page and "0.350 ± 0.071" in page
    saved = json.loads((sweep_dir / "summary.json").read_text())
    assert saved["points"][0]["metrics"]["eval/arith/acc"]["mean"] == pytest.approx(0.35)
    assert data["points"] == saved["points"]


@pytest.mark.parametrize(
    "keys, want",
    [
        (["eval/a/pass@1", "eval/a/acc"], "eval/a/acc"),
        (["eval/a/pass@4", "eval/a/avg@32", "eval/a/maj@32"], "eval/a/avg@32"),
        (["eval/a/code_share"], None),
        (["eval/b/acc"], None),
    ],
)
def test_accuracy_metric_choice(keys, want):
    assert accuracy_key(keys, "a") == want


def test_step_zero_sft_records_are_not_rl_steps():
    from toolrl.sweep.summary import RunData, run_metrics

    records = [{"step": 0, "time/step_s": 500.0, "acc": 1.0, "sft/loss": 0.3},
               {"step": 1, "time/step_s": 2.0, "acc": 0.0}, {"step": 2, "time/step_s": 4.0, "acc": 0.5}]
    m = run_metrics(RunData("r", "p", {}, 0, "finished", records), tail=10)
    assert m["time/step_s"] == pytest.approx(3.0)  # median of 2 and 4; the SFT step would make it 4
    assert m["acc"] == pytest.approx(0.25)


def test_a_swept_stabiliser_shows_the_metric_it_logs_when_it_acts(tmp_path):
    """A void-turn sweep's table carries train/void_masked (mean over every RL step, not the tail), and only the
    swept mechanism's columns appear: a TIS metric logged by the same runs is not a column here."""
    spec = parse_spec({"name": "vt", "axes": {"algo.void_turn_mask": [False, True]}, "seeds": [0]})
    prepare_sweep_dir(spec, tmp_path)
    off, on = (r.name for r in spec.runs())
    for name, masked in ((off, [0, 0, 0]), (on, [4, 0, 2])):
        recs = [{"step": 0, "sft/loss": 0.1}]
        recs += [{"step": i, "acc": 0.5, "train/void_turns": 4.0, "train/void_masked": float(m), "mismatch_kl": 1e-9}
                 for i, m in enumerate(masked, start=1)]
        write_run(tmp_path, name, recs)
    spec, runs = load_runs(tmp_path)
    p_off, p_on = summarize(runs, tail=1)
    assert p_on.metrics["train/void_masked"].mean == pytest.approx(2.0)  # (4 + 0 + 2) / 3, not the last step's 2
    assert p_off.metrics["train/void_masked"].mean == 0.0
    header, rows = table_rows(spec, [p_off, p_on])
    assert "void masked" in header and "void turns" in header and "mismatch kl" not in header
    assert rows[1][header.index("void masked")] == "2.000"


def test_tiny_values_are_not_printed_as_zero():
    from toolrl.sweep.report import fmt_stat
    from toolrl.sweep.summary import Stat

    assert fmt_stat(Stat.of([3e-8]), "mismatch_kl") == "3.0e-08"
    assert fmt_stat(Stat.of([0.0]), "mismatch_kl") == "0.000"
