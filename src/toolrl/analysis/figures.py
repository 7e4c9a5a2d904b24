"""PNG figures, one per paper figure, drawn from the analysis record (matplotlib, Agg backend: no display).

Every figure has a fixed size (``SIZES`` at ``DPI``), so its pixel size is known in advance, and a title naming
the paper figure it reproduces. Absent values (None) are drawn as gaps, never as zeros.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from toolrl.analysis.analyze import curve, headline
from toolrl.analysis.purpose import LABELS

DPI = 100
SIZES = {  # inches; pixels = inches * DPI
    "torl_code_over_training": (15, 4.5),
    "torl_effect_of_C": (15, 4.5),
    "retool_fig3_code_behaviour": (15, 8),
    "retool_fig4_self_correction": (11, 4.5),
    "retool_fig5_code_purpose": (11, 5),
    "distributions": (11, 4.5),
}
TITLES = {
    "torl_code_over_training": "ToRL Fig. 4 - code ratio and code pass rate over training",
    "torl_effect_of_C": "ToRL Fig. 5 / Table 4 - effect of the call limit C",
    "retool_fig3_code_behaviour": "ReTool Fig. 3 (a-f) - code behaviour over training",
    "retool_fig4_self_correction": "ReTool Fig. 4 - self-correction (a failed call fixed by a later call)",
    "retool_fig5_code_purpose": "ReTool Fig. 5 - code purpose (rule-based AST labels)",
    "distributions": "Distributions behind ToRL Fig. 4 and ReTool Fig. 3f: calls per response, first-call position",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _nan(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


def _positions(xs: Sequence[int | str]) -> tuple[list[float], list[str] | None]:
    """Numeric x for steps; categorical positions (with tick labels) when some x is a name."""
    if all(isinstance(x, int) for x in xs):
        return [float(x) for x in xs], None  # type: ignore[arg-type]
    return [float(i) for i in range(len(xs))], [str(x) for x in xs]


def _line(ax: Any, series: dict[str, Any], key: str, label: str, bench: str | None = None, **kw: Any) -> bool:
    xs, ys = curve(series, key, bench)
    pos, ticks = _positions(xs)
    vals = [_nan(v) for v in ys]
    if all(math.isnan(v) for v in vals):
        return False
    ax.plot(pos, vals, **{"marker": "o", "ms": 4, **kw}, label=label)
    if ticks:
        ax.set_xticks(pos, ticks, rotation=20, fontsize=7)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and checkpoints are whole numbers
    return True


def _panel(ax: Any, all_series: Sequence[dict[str, Any]], key: str, title: str, percent: bool = False) -> None:
    drawn = False
    for i, s in enumerate(all_series):
        multi = len(s["benchmarks"]) > 1
        drawn |= _line(ax, s, key, s["name"] + (" avg" if multi else ""), color=f"C{i}")  # one colour per series
        if multi:  # the benchmarks behind the average, thin, with their own markers
            for bench, marker in zip(s["benchmarks"], "^vsdP*xh"):
                _line(ax, s, key, f"{s['name']} {bench}", bench, color=f"C{i}", lw=0.8, alpha=0.6, marker=marker)
    _finish(ax, title, all_series, drawn, percent)


def _finish(ax: Any, title: str, all_series: Sequence[dict[str, Any]], drawn: bool, percent: bool = False) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(all_series[0]["x_label"] if all_series else "step", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if percent:
        ax.set_ylim(-0.03, 1.03)
    if not drawn:
        ax.text(0.5, 0.5, "not computable from\nthese rollouts", ha="center", va="center", transform=ax.transAxes, color="grey")
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _figure(name: str, nrows: int, ncols: int) -> tuple[Any, Any]:
    plt = _plt()
    fig, axs = plt.subplots(nrows, ncols, figsize=SIZES[name], dpi=DPI, squeeze=False)
    fig.suptitle(TITLES[name], fontsize=11)
    return fig, axs


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=DPI)  # no bbox_inches: the pixel size stays SIZES * DPI
    _plt().close(fig)
    return path


def torl_code_over_training(series: Sequence[dict[str, Any]], out: Path) -> Path:
    fig, axs = _figure("torl_code_over_training", 1, 3)
    ax = axs[0][0]
    drawn = False
    for i, s in enumerate(series):
        drawn |= _line(ax, s, "code_ratio_written", f"{s['name']} written", color=f"C{i}")
        drawn |= _line(ax, s, "code_ratio_executed", f"{s['name']} executed", color=f"C{i}", ls="--", mfc="none")
    _finish(ax, "code ratio (responses with code)", series, drawn, percent=True)
    _panel(axs[0][1], series, "pass_rate", "code pass rate", percent=True)
    _panel(axs[0][2], series, "accuracy", "accuracy", percent=True)
    return _save(fig, out / "torl_code_over_training.png")


def torl_effect_of_c(series: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """Final behaviour against C: drawn only when the series cover two or more values of C."""
    by_c: dict[int, list[dict[str, Any]]] = {}
    for s in series:
        if s["max_calls"] is not None and s["kind"] == "train":
            by_c.setdefault(int(s["max_calls"]), []).append(s)
    if len(by_c) < 2:
        return None
    cs = sorted(by_c)

    def mean_of(c: int, get: Callable[[dict[str, Any]], Any]) -> float:
        vals = [v for v in (get(s) for s in by_c[c]) if isinstance(v, (int, float))]
        return sum(vals) / len(vals) if vals else math.nan

    def last_mean(d: dict[Any, float], tail: int = 5) -> float | None:
        vals = [d[k] for k in sorted(d, key=int)][-tail:]
        return sum(vals) / len(vals) if vals else None

    def median(d: dict[Any, float]) -> float | None:
        return statistics.median(d.values()) if d else None

    panels = [
        ("accuracy", lambda s: headline(s["summary"]).get("accuracy")),
        ("reward (last steps)", lambda s: last_mean(s["reward"])),
        ("response length (tokens)", lambda s: headline(s["summary"]).get("response_len")),
        ("written blocks executed", lambda s: headline(s["summary"]).get("executed_share")),
        ("time per step (s, median)", lambda s: median(s["step_time"])),
    ]
    fig, axs = _figure("torl_effect_of_C", 1, len(panels))
    for ax, (title, get) in zip(axs[0], panels):
        vals = [mean_of(c, get) for c in cs]
        ax.bar([str(c) for c in cs], vals, color="tab:blue")
        _finish(ax, title, [{"x_label": "C (max calls)"}], not all(math.isnan(v) for v in vals))
    return _save(fig, out / "torl_effect_of_C.png")


def retool_fig3(series: Sequence[dict[str, Any]], out: Path) -> Path:
    fig, axs = _figure("retool_fig3_code_behaviour", 2, 3)
    _panel(axs[0][0], series, "response_len", "(a) response length (tokens)")
    _panel(axs[0][1], series, "code_ratio_written", "(b) code ratio (responses with code)", percent=True)
    _panel(axs[0][2], series, "code_lines", "(c) code lines per response with code")
    _panel(axs[1][0], series, "calls_per_correct", "(d) code calls per correct response")
    ax = axs[1][1]
    drawn = False
    for i, s in enumerate(series):
        drawn |= _line(ax, s, "last_pass_rate_correct", f"{s['name']} correct", color=f"C{i}")
        drawn |= _line(ax, s, "last_pass_rate_incorrect", f"{s['name']} incorrect", color=f"C{i}", ls="--",
                       marker="x")
    _finish(ax, "(e) pass rate of the last call: correct vs incorrect", series, drawn, percent=True)
    _panel(axs[1][2], series, "timing_mean", "(f) first call starts at (share of response)", percent=True)
    return _save(fig, out / "retool_fig3_code_behaviour.png")


def retool_fig4(series: Sequence[dict[str, Any]], out: Path) -> Path:
    fig, axs = _figure("retool_fig4_self_correction", 1, 2)
    _panel(axs[0][0], series, "self_correction_share", "responses with a failed call fixed later", percent=True)
    _panel(axs[0][1], series, "self_correction_acc", "accuracy of those responses", percent=True)
    return _save(fig, out / "retool_fig4_self_correction.png")


def retool_fig5(series: Sequence[dict[str, Any]], out: Path) -> Path:
    """Stacked shares of code purposes: one bar per point of each series (the summary when there are many)."""
    bars: list[tuple[str, dict[str, float] | None]] = []
    for s in series:
        pts = s["points"] if sum(len(x["points"]) for x in series) <= 24 else []
        for p in pts:
            bars.append((f"{s['name']} {p['x']}" if len(series) > 1 else str(p["x"]), headline(p).get("purposes")))
        if not pts:
            bars.append((s["name"], headline(s["summary"]).get("purposes")))
    fig, axs = _figure("retool_fig5_code_purpose", 1, 1)
    ax = axs[0][0]
    drawn = any(b for _, b in bars)
    bottom = [0.0] * len(bars)
    for label in LABELS:
        vals = [b[label] if b else 0.0 for _, b in bars]
        ax.bar(range(len(bars)), vals, bottom=bottom, label=label)
        bottom = [a + v for a, v in zip(bottom, vals)]
    names = [name for name, _ in bars]
    ax.set_xticks(range(len(bars)), names, rotation=20 if max(map(len, names), default=0) > 8 else 0, fontsize=7)
    ax.set_ylabel("share of code blocks", fontsize=8)
    _finish(ax, "code purpose per " + (series[0]["x_label"] if series else "point"), series, drawn, percent=True)
    if drawn:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars fill the axes
    return _save(fig, out / "retool_fig5_code_purpose.png")


def distributions(series: Sequence[dict[str, Any]], out: Path) -> Path:
    fig, axs = _figure("distributions", 1, 2)
    ax = axs[0][0]
    width = 0.8 / max(1, len(series))
    top = 1
    drawn = False
    for i, s in enumerate(series):
        hist = {int(k): v for k, v in (headline(s["summary"]).get("calls_hist") or {}).items()}
        total = sum(hist.values())
        if total:
            ks = sorted(hist)
            top = max(top, ks[-1])
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar([k + offset for k in ks], [hist[k] / total for k in ks], width=width, label=s["name"])
            drawn = True
    ax.set_xticks(range(top + 1))
    ax.set_xlim(-0.6, top + 0.6)
    ax.set_ylabel("share of responses", fontsize=8)
    _finish(ax, "calls per response (" + (series[0]["summary"]["label"] if series else "") + ")",
            [{"x_label": "calls"}], drawn, percent=True)
    ax = axs[0][1]
    drawn = False
    for s in series:
        timing = headline(s["summary"]).get("timing") or []
        if timing:
            ax.hist(timing, bins=[i / 10 for i in range(11)], weights=[1 / len(timing)] * len(timing), alpha=0.5,
                    label=s["name"])
            drawn = True
    ax.set_ylabel("share of responses with a call", fontsize=8)
    _finish(ax, "first call starts at (share of response)", [{"x_label": "position in the response"}], drawn,
            percent=True)
    return _save(fig, out / "distributions.png")


def write_figures(analysis: dict[str, Any], out: Path) -> list[Path]:
    series = analysis["series"]
    made = [torl_code_over_training(series, out), torl_effect_of_c(series, out), retool_fig3(series, out),
            retool_fig4(series, out), retool_fig5(series, out), distributions(series, out)]
    return [p for p in made if p is not None]
