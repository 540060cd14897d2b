"""Write the report: report.md, report.html (self-contained) and tables.xlsx.

The content is built once as `Section`s (analysis/sections.py); this module
only lays it out. Tables carry numbers (for Excel) and are formatted here.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import fmt
from analysis.tables import STAT_FIELDS

# Column headers for the non-metric columns; metrics and varied keys keep their own names.
HEADERS = {"n": "n", "p_value": "p vs best", "verdict": "vs best", "epochs_run mean": "epochs run",
           "time_s mean": "time (s)", "params mean": "params", "final_samples_per_s mean": "samples/s",
           "hedges_g": "Hedges' g", "epoch_time mean": "s/epoch"}
MEASURED = ("time_s", "params", "importance", "final_samples_per_s", "hedges_g", "epoch_time")  # by fmt.number


@dataclass
class Table:
    title: str
    data: pd.DataFrame  # numbers; written as is to tables.xlsx
    caption: str = ""
    sheet: str | None = ""  # tables.xlsx sheet name: "" for the title, None for no sheet
    show: list[str] | None = None  # the columns report.md/html show (default: all)
    rows: int | None = None  # the rows they show (default: all); tables.xlsx has every row
    note: str = ""  # a paragraph under the table
    p_values: bool = False  # every number in it is a p-value (a matrix of them)

    @property
    def shown(self) -> pd.DataFrame:
        data = self.data if self.show is None else self.data[[c for c in self.show if c in self.data]]
        return data.head(self.rows) if self.rows else data

    @property
    def full_caption(self) -> str:
        cut = f" The first {self.rows} of {len(self.data)} rows; tables.xlsx has them all." \
            if self.rows and len(self.data) > self.rows else ""
        return (self.caption + cut).strip()


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)


# ---------------------------------------------------------------- formatting

def view(data: pd.DataFrame, p_values: bool = False) -> tuple[list[str], list[list[str]], list[list[float | None]]]:
    """Headers, text cells and numeric sort keys: 'm mean/std/ci_low/ci_high' columns become one cell, and so do
    'm diff/diff ci_low/diff ci_high'."""
    headers, cells, keys = [], [], []
    for col in data.columns:
        name = str(col)
        stem = name.removesuffix(" mean")
        base = name.rsplit(" ", 1)[0]
        if name.endswith((" std", " ci_low", " ci_high")) and (f"{base} mean" in data or base.endswith(" diff")):
            continue  # folded into the mean's or the difference's cell
        if name.endswith(" mean") and f"{stem} std" in data:
            n = data["n"] if "n" in data else pd.Series(2, index=data.index)
            cells.append([fmt.stat(stem, *(r[f"{stem} {f}"] for f in STAT_FIELDS), k)
                          for (_, r), k in zip(data.iterrows(), n)])
            headers.append(stem)
        elif name.endswith(" diff") and f"{name} ci_low" in data:
            metric = name.removesuffix(" diff")
            cells.append([fmt.difference(metric, r[name], r[f"{name} ci_low"], r[f"{name} ci_high"])
                          for _, r in data.iterrows()])
            headers.append("difference from the best")
        else:
            p = name == "p_value" or p_values
            cells.append([fmt.p_value(v) if p and pd.api.types.is_number(v) else _cell(stem, v) for v in data[col]])
            headers.append(HEADERS.get(name, name))
        keys.append([_sort_key(v) for v in data[col]])
    return headers, [list(row) for row in zip(*cells)], [list(row) for row in zip(*keys)]


def _cell(name: str, v) -> str:
    measured = fmt.is_accuracy(name) or fmt.is_loss(name) or name in MEASURED
    if measured and pd.api.types.is_number(v) and not isinstance(v, bool):
        return fmt.number(name, v)
    return fmt.value(v)  # config values, ids, counts


def _sort_key(v) -> float | None:
    if isinstance(v, bool) or not pd.api.types.is_number(v) or pd.isna(v):
        return None
    return float(v)


# ---------------------------------------------------------------- markdown

def _md_text(text: str) -> str:
    """Text, never markup: Markdown viewers render raw HTML, and config strings come from study files."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {_md_text(title)}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [_md_text(p), ""]
        for t in s.tables:
            lines += [_md_text(f"**{t.title}.** {t.full_caption}".rstrip()), ""]
            lines += _md_table(t.shown, t.p_values) + [""]
            lines += [_md_text(t.note), ""] if t.note else []
        for path, caption in s.figures:
            lines += [f"![{caption}](figures/{path.name})", ""]
    return "\n".join(lines)


def _md_table(data: pd.DataFrame, p_values: bool = False) -> list[str]:
    if data.empty:
        return ["(none yet)"]
    headers, rows, _ = view(data, p_values)

    def line(cells):
        return "| " + " | ".join(_md_text(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(headers), "|" + "---|" * len(headers)] + [line(r) for r in rows]


# ---------------------------------------------------------------- html

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       padding: 1.5em 2em 4em; max-width: 1500px; }
h1 { font-size: 1.7em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 2px solid #ddd; }
nav { font-size: .9em; color: #555; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; margin: 0 0 1.4em; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
p.tcap { font-size: 13px; color: #444; margin: 1.4em 0 .3em; } p.tcap b { color: #222; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: right; vertical-align: top;
         white-space: nowrap; }
th { background: #f3f4f6; position: sticky; top: 0; cursor: pointer; user-select: none; }
th:hover { background: #e5e7eb; } th.asc::after { content: " ▲"; } th.desc::after { content: " ▼"; }
td.text, th.text { text-align: left; } .ci { color: #777; font-size: 11.5px; }
tr.best td { background: #d9f2df; font-weight: 600; } tr.tied td { background: #eef9f0; }
tr.worse td { color: #555; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; }
p.note { color: #8a5a00; }
"""

# Click a header to sort by it; numbers sort by value (data-v), the rest as text.
JS = """
document.querySelectorAll('table.sortable th').forEach(th => th.addEventListener('click', () => {
  const i = th.cellIndex, body = th.closest('table').tBodies[0], asc = !th.classList.contains('asc');
  th.parentNode.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
  th.classList.add(asc ? 'asc' : 'desc');
  const key = r => { const c = r.cells[i]; return c.dataset.v !== undefined ? +c.dataset.v : c.textContent; };
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    const d = typeof x === 'number' && typeof y === 'number' ? x - y
            : String(x).localeCompare(String(y), undefined, {numeric: true});
    return asc ? d : -d;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""


def html_page(title: str, sections: list[Section], refresh_s: int | None = None) -> str:
    """`refresh_s`: the page reloads itself (a live report of a running study)."""
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = [f"<h1>{html.escape(title)}</h1>", f"<nav>{nav}</nav>"]
    for i, s in enumerate(sections):
        body.append(f'<h2 id="s{i}">{html.escape(s.title)}</h2>')
        body += [_paragraph(p) for p in s.paragraphs]
        for t in s.tables:
            body.append(_html_table(t))
            body += [_paragraph(t.note)] if t.note else []
        body += [_figure(path, caption) for path, caption in s.figures]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            + (f'<meta http-equiv="refresh" content="{refresh_s}">\n' if refresh_s else "")
            + f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{JS}</script>\n</body></html>\n")


def _paragraph(text: str) -> str:
    cls = ' class="note"' if text.startswith("Note:") else ""
    # `code` and **bold** are the only markdown the paragraphs use.
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return f"<p{cls}>{text}</p>"


def _html_table(t: Table) -> str:
    # Above the table, not a <caption>: a caption wraps at the width of a narrow table.
    caption = f'<p class="tcap"><b>{html.escape(t.title)}.</b> {html.escape(t.full_caption)}</p>'
    if t.data.empty:
        empty = '<tr><td class="text">(none yet)</td></tr>'
        return f'{caption}<div class="scroll"><table><tbody>{empty}</tbody></table></div>'
    headers, rows, keys = view(t.shown, t.p_values)
    verdicts = t.data["verdict"].tolist()[:len(rows)] if "verdict" in t.data else [""] * len(rows)
    text = [all(row[i] is None for row in keys) for i in range(len(headers))]  # left-aligned columns
    head = "".join(f'<th class="text">{html.escape(h)}</th>' if t else f"<th>{html.escape(h)}</th>"
                   for h, t in zip(headers, text))
    body = []
    for row, row_keys, verdict in zip(rows, keys, verdicts):
        cls = {"best": "best", "tied": "tied", "worse": "worse"}.get(verdict, "")
        tds = "".join(_td(c, k) for c, k in zip(row, row_keys))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return (f'{caption}<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _td(text: str, key: float | None) -> str:
    main, _, sub = text.partition("\n")
    content = html.escape(main) + (f'<br><span class="ci">{html.escape(sub)}</span>' if sub else "")
    if key is None:
        return f'<td class="text">{content}</td>'
    return f'<td data-v="{key:.10g}">{content}</td>'


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# ---------------------------------------------------------------- files

def write_text(path: Path, text: str) -> None:
    """Write beside, then rename: a reader (a browser, a second analysis) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def xlsx(path: Path, tables: list[Table]) -> None:
    """One sheet per table, numbers as numbers, header row frozen."""
    tmp = path.with_name(f".{path.stem}.tmp.xlsx")
    used: set[str] = set()
    with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
        for t in tables:
            if t.sheet is None:
                continue
            name = _sheet_name(t.sheet or t.title, used)
            t.data.to_excel(writer, sheet_name=name, index=False)
            sheet = writer.sheets[name]
            sheet.freeze_panes = "A2"
            _as_text(sheet)
            for i, col in enumerate(t.data.columns):
                width = max([len(str(col))] + [len(str(v)) for v in t.data[col].head(200)])
                sheet.column_dimensions[sheet.cell(1, i + 1).column_letter].width = min(45, width + 2)
    os.replace(tmp, path)


def _as_text(sheet) -> None:
    """A config value like "=1+1" or "@sum" must stay text: openpyxl writes a string starting with "=" as a live
    formula, and a spreadsheet re-reads one starting with = + - @ as a formula when the cell is edited. Numbers,
    negative ones too, are not strings and stay numbers."""
    for row in sheet.iter_rows():
        for cell in row:
            if isinstance(cell.value, str) and cell.value.startswith(("=", "+", "-", "@")):
                cell.data_type = "s"
                cell.quotePrefix = True  # Excel and LibreOffice show and keep it as text ('=1+1)


def _sheet_name(title: str, used: set[str]) -> str:
    """Excel allows 31 characters and none of []:*?/\\ in a sheet name; names must be unique."""
    base = re.sub(r"[\[\]:*?/\\]", "_", title)[:31]
    name, i = base, 2
    while name.lower() in used:
        name = f"{base[:28]} {i}"
        i += 1
    used.add(name.lower())
    return name
