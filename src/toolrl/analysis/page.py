"""analysis.html: one self-contained page (tables and figures, images inlined as base64, no outside files)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from toolrl.analysis.figures import TITLES
from toolrl.analysis.tables import Table


def _table(t: Table) -> str:
    title, header, rows = t
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h3>{esc(title)}</h3><table><tr>{head}</tr>{body}</table>"


def write_page(analysis: dict[str, Any], tables: Sequence[Table], images: Sequence[Path], path: Path,
               notes: Sequence[str] = ()) -> Path:
    esc = html.escape
    sources = ", ".join(esc(s["source"]) for s in analysis["series"])
    figs = []
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        caption = TITLES.get(img.stem, img.stem)
        figs.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(caption)} ({esc(img.name)})</figcaption></figure>")
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>toolrl analysis</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1600px}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%}}figure{{margin:1em 0}}figcaption{{color:#555;font-size:13px}}</style></head><body>
<h1>toolrl analysis</h1><p>Sources: {sources}. "-" marks a metric that cannot be computed from these rollouts
(for example a pass rate without any code call); it is never a zero.</p>
{f"<ul>{note_html}</ul>" if note_html else ""}
{"".join(_table(t) for t in tables)}
<h2>Figures</h2>{"".join(figs)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
