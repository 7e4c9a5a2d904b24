"""Sweep figures and the page that shows them: learning curves per axis point, final metrics against each axis.

Files written into the sweep directory: ``curves.png``, ``final_vs_<axis>.png`` (one per axis with two or more
values), ``summary.json`` and ``index.html``. matplotlib is imported here only, with the Agg backend (no display).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from toolrl.sweep.spec import SweepSpec, format_label
from toolrl.sweep.summary import (
    CURVE_METRICS,
    PointSummary,
    RunData,
    Stat,
    columns,
    point_curve,
    to_json,
)

FINAL_METRICS = ("code/share", "code/success_rate", "code/calls_per_response", "response/len", "time/step_s")


SHORT_NAMES = {
    "reward/mean": "reward", "acc": "train acc", "code/share": "code share", "code/success_rate": "code ok",
    "code/calls_per_response": "calls/resp", "response/len": "resp len", "time/step_s": "s/step",
    "eval/avg": "avg acc",
    # stabiliser metrics (summary.MECHANISM_METRICS): per step, averaged over the RL steps
    "train/void_turns": "void turns", "train/void_masked": "void masked", "roc/dropped": "roc dropped",
    "roc/dropped_correct": "roc dropped ok", "roc/kept_penalty": "kept pen", "roc/dropped_penalty": "dropped pen",
    "train/overlong_masked": "overlong masked", "train/overlong_penalized": "overlong pen", "grad_norm": "grad norm",
    "loss/policy": "pg loss", "tis/clip_frac": "tis clip", "tis/weight_mean": "tis weight", "tis/seq_masked":
    "seq masked", "mismatch_kl": "mismatch kl", "clip_frac": "clip frac", "clip_frac_lower": "clip lower",
    "train/zero_signal_dropped": "flat dropped", "train/update_skipped": "skipped",
}


def short_name(key: str) -> str:
    """Column titles that fit a terminal: eval/arith/acc -> 'arith acc'."""
    if key.startswith("eval/") and key.count("/") >= 2:
        return " ".join(key.split("/", 2)[1:])
    return SHORT_NAMES.get(key, key)


def fmt_stat(s: Stat | None, key: str = "") -> str:
    """'0.412 ± 0.031' (3 significant decimals for rates, 1 for lengths and seconds)."""
    if s is None:
        return "-"
    digits = 1 if key in ("response/len", "time/step_s") else 3
    if 0 < abs(s.mean) < 10 ** -digits:  # e.g. mismatch_kl ~ 1e-8: "0.000" would read as exactly none
        return f"{s.mean:.1e} ± {s.std:.1e}" if s.n > 1 else f"{s.mean:.1e}"
    if s.n > 1:
        return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"
    return f"{s.mean:.{digits}f}"


def table_rows(spec: SweepSpec, points: Sequence[PointSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table (shared by the terminal view and index.html)."""
    axes = [a for a in spec.axes if a.key != "run.seed"]
    cols = columns(points)
    header = [a.label for a in axes] + ["runs"] + [short_name(c) for c in cols]
    rows = []
    for p in points:
        cells = [format_label(p.values.get(a.key)) for a in axes] + [f"{p.counted}/{len(p.runs)}"]
        cells += [fmt_stat(p.metrics.get(c), c) for c in cols]
        rows.append(cells)
    return header, rows


def _smooth(ys: list[float], window: int) -> list[float]:
    if window <= 1:
        return ys
    out = []
    for i in range(len(ys)):
        chunk = ys[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_curves(runs: Sequence[RunData], path: Path, smooth: int = 0) -> Path | None:
    """Reward, training accuracy and code share over steps; one line per point (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, list[RunData]] = {}
    for r in runs:
        points.setdefault(r.point, []).append(r)
    if not any(r.records for r in runs):
        return None
    fig, axs = plt.subplots(1, len(CURVE_METRICS), figsize=(5 * len(CURVE_METRICS), 3.6), squeeze=False)
    for ax, key in zip(axs[0], CURVE_METRICS):
        for point, members in points.items():
            steps, mean, lo, hi = point_curve(members, key)
            if not steps:
                continue
            window = smooth or max(1, len(steps) // 10)
            line = ax.plot(steps, _smooth(mean, window), label=point, lw=1.6)[0]
            if len(members) > 1:
                ax.fill_between(steps, _smooth(lo, window), _smooth(hi, window), color=line.get_color(), alpha=0.15)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axs[0][0].legend(fontsize=7)
    fig.suptitle("learning curves (mean over seeds, band = min..max, moving average)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_final_vs_axis(spec: SweepSpec, points: Sequence[PointSummary], out_dir: Path) -> list[Path]:
    """For each axis: final metrics against its values, one line per combination of the other axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [a for a in spec.axes if a.key != "run.seed"]
    keys = [c for c in columns(points) if c.startswith("eval/")] + [
        k for k in FINAL_METRICS if any(k in p.metrics for p in points)]
    written = []
    for axis in axes:
        if len(axis.values) < 2 or not keys:
            continue
        others = [a for a in axes if a is not axis]
        lines: dict[str, list[PointSummary]] = {}
        for p in points:
            label = ", ".join(f"{a.label}={format_label(p.values.get(a.key))}" for a in others) or axis.label
            lines.setdefault(label, []).append(p)
        xs_labels = list(dict.fromkeys(format_label(v) for v in axis.values))  # zip axes may repeat a value
        ncols = min(3, len(keys))
        nrows = -(-len(keys) // ncols)
        fig, axs = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
        for ax in axs.flat[len(keys):]:
            ax.set_visible(False)
        for ax, key in zip(axs.flat, keys):
            for label, members in lines.items():
                xs, ys, es = [], [], []
                for p in members:
                    s = p.metrics.get(key)
                    if s is None:
                        continue
                    xs.append(xs_labels.index(format_label(p.values.get(axis.key))))
                    ys.append(s.mean)
                    es.append(s.std)
                if xs:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
            ax.set_xticks(range(len(xs_labels)), xs_labels)
            ax.set_xlabel(axis.label)
            ax.set_title(key, fontsize=9)
            ax.grid(alpha=0.3)
        if len(lines) > 1:
            axs[0][0].legend(fontsize=7)
        fig.suptitle(f"final metrics vs {axis.label} (mean ± std over seeds)", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"final_vs_{axis.label.replace('.', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_index(spec: SweepSpec, points: Sequence[PointSummary], images: Sequence[Path], out_dir: Path) -> Path:
    header, rows = table_rows(spec, points)
    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    imgs = "".join(f'<figure><img src="{esc(p.name)}"><figcaption>{esc(p.name)}</figcaption></figure>' for p in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sweep {esc(spec.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>sweep {esc(spec.name)}</h1><p>{esc(spec.description)}</p>
<p>Mean ± sample std over seeds; training metrics are the mean of the last logged steps (see summary.json).</p>
{table}{imgs}</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path


def write_report(spec: SweepSpec, runs: Sequence[RunData], points: Sequence[PointSummary], out_dir: Path,
                 tail: int) -> dict[str, Any]:
    """Every summary file; returns the JSON summary (with the list of files written)."""
    out_dir = Path(out_dir)
    images = [p for p in [plot_curves(runs, out_dir / "curves.png")] if p is not None]
    images += plot_final_vs_axis(spec, points, out_dir)
    index = write_index(spec, points, images, out_dir)
    data = to_json(spec, points, tail)
    data["files"] = [str(p) for p in (*images, index)]
    (out_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data
