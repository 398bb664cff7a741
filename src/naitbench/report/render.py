"""Markdown and self-contained HTML renderings of the comparison."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path

from naitbench.report.compare import Row
from naitbench.report.figures import arm_label
from naitbench.report.stats import Comparison


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _versus(comparison: Comparison | None, higher: bool, with_rank: bool) -> str:
    if comparison is None:
        return "-"
    text = (f"{comparison.difference:+.4f} [{comparison.low:+.4f}, {comparison.high:+.4f}]; "
            f"{comparison.verdict(higher)}")
    if with_rank:
        text += f"; rank {comparison.rank} of {comparison.n_reference + 1}"
    return text


def score_table(rows: list[Row], task: str) -> list[str]:
    """Markdown table of one task: every arm with its statistics against the references."""
    lines = ["| arm | n | mean | between-seed sd | vs random subsets: diff [95% CI]; verdict; "
             "rank | vs full data: diff [95% CI]; verdict |", "|---|---|---|---|---|---|"]
    for row in (r for r in rows if r.task == task):
        lines.append(f"| {arm_label(row)} | {row.n} | {_fmt(row.mean)} | {_fmt(row.sd)} | "
                     f"{_versus(row.vs_random, row.higher_is_better, True)} | "
                     f"{_versus(row.vs_full, row.higher_is_better, False)} |")
    return lines


def cost_table(costs: list[Mapping]) -> list[str]:
    """Selection cost per method; a shared extraction pass is listed once."""
    lines = ["| method | target | wall time (s) | forward tokens | backward tokens | note |",
             "|---|---|---|---|---|---|"]
    for cost in costs:
        lines.append(f"| {cost['method']} | {cost.get('target') or '-'} | "
                     f"{_fmt(cost.get('wall_s'), 1)} | {cost.get('forward_tokens', 0):,} | "
                     f"{cost.get('backward_tokens', 0):,} | {cost.get('note', '')} |")
    return lines


def markdown(title: str, meta: Mapping[str, str], rows: list[Row], figures: Mapping[str, Path],
             costs: list[Mapping], sections: Mapping[str, list[str]], out_dir: Path) -> str:
    """The whole report as Markdown; figures are referenced relative to `out_dir`."""
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items()]
    lines += ["", "Seeds are the unit of replication: intervals come from a two-level bootstrap "
              "(replicates, then evaluation items paired across arms). A difference is called "
              "*inside seed noise* when its interval includes zero or it is smaller than the "
              "difference the current seed counts can detect (80% power, 5% level).", ""]
    for task in sorted({r.task for r in rows}):
        lines += [f"## {task}", ""]
        if task in figures:
            lines += [f"![{task}]({figures[task].relative_to(out_dir)})", ""]
        lines += [*score_table(rows, task), ""]
    lines += ["## Selection cost", "", *cost_table(costs), ""]
    for heading, body in sections.items():
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


def html_page(title: str, markdown_text: str, figures: Mapping[str, Path], out_dir: Path) -> str:
    """A self-contained HTML page: Markdown tables converted, figures embedded as base64."""
    body, table = [], []

    def flush() -> None:
        if table:
            head, *rest = [r for r in table if not set(r) <= set("|-")]
            cells = [c.strip() for c in head.strip("|").split("|")]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells)
                        + "</tr>")
            for line in rest:
                cells = [c.strip() for c in line.strip("|").split("|")]
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                            + "</tr>")
            body.append("</table>")
            table.clear()

    embedded = {str(p.relative_to(out_dir)): p for p in figures.values()}
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            rel = line.split("](", 1)[1].rstrip(")")
            data = base64.b64encode(embedded[rel].read_bytes()).decode()
            body.append(f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
