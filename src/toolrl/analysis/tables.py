"""Table contents (header + rows of text), shared by the terminal (Rich) and analysis.html."""

from __future__ import annotations

from typing import Any, Sequence

from toolrl.analysis.analyze import headline
from toolrl.analysis.metrics import LABEL, METRICS, format_value
from toolrl.analysis.purpose import LABELS

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows

CURVE_KEYS = ("n", "accuracy", "code_ratio_written", "code_ratio_executed", "pass_rate", "last_pass_rate",
              "calls_mean", "code_lines", "timing_mean", "self_correction_share", "response_len")
SHORT = {
    "n": "n", "accuracy": "acc", "code_ratio_written": "code written", "code_ratio_executed": "code run",
    "pass_rate": "pass", "last_pass_rate": "last pass", "calls_mean": "calls", "code_lines": "lines",
    "timing_mean": "1st call at", "self_correction_share": "self-fix", "response_len": "length",
}


def _hist(h: dict[Any, int] | None) -> str:
    if not h:
        return "-"
    total = sum(h.values())
    return "  ".join(f"{k}:{100 * v / total:.0f}%" for k, v in sorted(h.items(), key=lambda kv: int(kv[0])))


def _extra_rows(cols: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = [["calls per response (distribution)", *[_hist(c.get("calls_hist")) for c in cols]]]
    for lab in LABELS:
        rows.append([f"purpose: {lab}", *[format_value("accuracy", (c.get("purposes") or {}).get(lab))
                                          if c.get("purposes") else "-" for c in cols]])
    return rows


def summary_table(series: dict[str, Any]) -> Table:
    """Metrics down, benchmarks across (plus the cross-benchmark average when there are several)."""
    summ = series["summary"]
    names = list(summ["per_bench"])
    cols = [summ["per_bench"][b] for b in names]
    if summ.get("average"):
        names.append("avg")
        cols.append(summ["average"])
    header = ["metric", *names]
    rows = [[label, *[format_value(key, c.get(key)) for c in cols]] for key, label, _ in METRICS]
    rows += _extra_rows(cols)
    return f"{series['name']} · {summ['label']}", header, rows


def curve_table(series: dict[str, Any], max_rows: int = 25) -> Table:
    """One row per step or checkpoint (the average over benchmarks when a point has several); long runs show
    every k-th point and the last one (analysis.json keeps them all)."""
    multi = any(p.get("average") for p in series["points"])
    points = series["points"]
    stride = -(-len(points) // max_rows)
    shown = [p for i, p in enumerate(points) if i % stride == 0 or i == len(points) - 1]
    header = [series["x_label"], *[SHORT[k] for k in CURVE_KEYS]]
    rows = [[str(p["x"]), *[format_value(k, headline(p).get(k)) for k in CURVE_KEYS]] for p in shown]
    title = f"{series['name']} · per {series['x_label']}" + (" (average over benchmarks)" if multi else "")
    if stride > 1:
        title += f" (every {stride}th {series['x_label']})"
    return title, header, rows


def side_by_side_table(series: Sequence[dict[str, Any]]) -> Table:
    """Several series (a sweep's runs, several training runs): metrics down, one headline column per series."""
    cols = [headline(s["summary"]) for s in series]
    header = ["metric", *[s["name"] for s in series]]
    rows = [[label, *[format_value(key, c.get(key)) for c in cols]] for key, label, _ in METRICS]
    rows += _extra_rows(cols)
    labels = sorted({s["summary"]["label"] for s in series})
    return f"{len(series)} series · {', '.join(labels)}", header, rows


def compare_table(a: dict[str, Any], b: dict[str, Any]) -> Table:
    """Two series side by side, each by its headline column, with the difference B - A."""
    ha, hb = headline(a["summary"]), headline(b["summary"])
    header = ["metric", f"A: {a['name']}", f"B: {b['name']}", "B - A"]
    rows = []
    for key, label, kind in METRICS:
        va, vb = ha.get(key), hb.get(key)
        diff = "-"
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            d = vb - va
            diff = f"{100 * d:+.1f} pt" if kind == "rate" else f"{d:+.2f}" if kind == "num" else f"{d:+g}"
        rows.append([label, format_value(key, va), format_value(key, vb), diff])
    rows += [r + [""] for r in _extra_rows([ha, hb])]
    title = f"compare · A = {a['summary']['label']} of {a['source']} · B = {b['summary']['label']} of {b['source']}"
    return title, header, rows


def cases_table(series: dict[str, Any], limit: int = 10) -> Table | None:
    cases = series["self_correction_cases"]
    if not cases:
        return None
    header = [series["x_label"], "bench", "problem", "correct", "show it with"]
    rows = [[str(c["x"]), c["bench"], f"{c['problem_id']} #{c['sample']}",
             "-" if c["correct"] is None else ("yes" if c["correct"] else "no"), c["command"]] for c in cases[:limit]]
    more = f" (first {limit} of {len(cases)})" if len(cases) > limit else ""
    return f"{series['name']} · self-correction cases{more}", header, rows


def llm_table(series: dict[str, Any]) -> Table | None:
    """Rule-based purpose shares next to the language model's, over the same blocks."""
    llm = series.get("llm_purposes")
    if not llm:
        return None
    rules = llm.get("rules_shares") or {}
    shares = llm.get("shares") or {}
    rows = [[lab, format_value("accuracy", rules.get(lab)), format_value("accuracy", shares.get(lab))] for lab in LABELS]
    rows.append(["unparsed answers", "", f"{llm['unparsed']} of {llm['blocks']}"])
    rows.append(["agreement with the rules", "", format_value("accuracy", llm.get("agreement_with_rules"))])
    title = f"{series['name']} · code purpose of {llm['blocks']} blocks: rules vs {llm.get('model', 'model')}"
    return title, ["purpose", "rules", "model"], rows


def all_tables(analysis: dict[str, Any], compare: bool = False) -> list[Table]:
    """Compare: A vs B. One series: its summary (benchmarks + average). Several: one column per series.
    Then per-point tables (up to three series: the figures carry the rest) and the self-correction cases."""
    out: list[Table] = []
    series = analysis["series"]
    if compare and len(series) == 2:
        out.append(compare_table(series[0], series[1]))
    elif len(series) == 1:
        out.append(summary_table(series[0]))
    else:
        out.append(side_by_side_table(series))
        out += [summary_table(s) for s in series if s["summary"].get("average")]
    for s in series:
        if len(s["points"]) > 1 and len(series) <= 3:
            out.append(curve_table(s))
        for extra in (cases_table(s, limit=10 if len(series) <= 3 else 3), llm_table(s)):
            if extra:
                out.append(extra)
    return out


__all__ = ["LABEL", "Table", "all_tables", "summary_table", "curve_table", "compare_table", "cases_table",
           "side_by_side_table"]
