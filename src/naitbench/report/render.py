"""Markdown and self-contained HTML renderings of the comparison.

The report leads with the answer: whether the headline methods beat random subsets on each
task, with seed-level intervals and the smallest difference the run could detect. Each task
then gets a compact table, one plain sentence per arm, and the full statistics.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from naitbench.report.compare import Row
from naitbench.report.names import (
    METHOD_TITLES,
    arm_label,
    arm_names,
    arm_order,
    method_title,
    task_heading,
    task_order,
    unit,
)
from naitbench.report.results import HEADLINE_METHODS, REFERENCE_RANDOM
from naitbench.report.stats import BETTER, INSIDE_NOISE, NOT_ASSESSABLE, WORSE, Comparison


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _interval(c: Comparison | None) -> str:
    if c is None:
        return "-"
    if math.isnan(c.low):
        return f"{c.difference:+.4f} [-]"
    return f"{c.difference:+.4f} [{c.low:+.4f}, {c.high:+.4f}]"


def _rank(c: Comparison | None) -> str:
    return f"{c.rank} of {c.n_reference + 1}" if c else "-"


def legend(rows: list[Row]) -> list[str]:
    """What the verdict words, the rank and the detectable difference mean (said once)."""
    lower = sorted({unit(r.metric) for r in rows if not r.higher_is_better})
    direction = f" (lower is better for {', '.join(lower)})" if lower else ""
    return [f"**Verdict**, arm against random subsets, from the 95% Student-t interval of "
            f"their difference at the subset level (docs/report.md): each model's mean over "
            f"the items both arms scored (items paired), training seeds averaged within a "
            f"subset, and the random subsets' between-subset spread as the noise one selected "
            f"subset must beat (an arm's own spread too when it has several selection seeds). "
            f"*{BETTER}* or *{WORSE}* when the whole interval lies on that side of zero"
            f"{direction}; *{INSIDE_NOISE}* when it includes zero; *{NOT_ASSESSABLE}* when "
            f"neither side has two subsets. On the first screen the verdict is Holm-adjusted "
            f"over its comparisons; elsewhere it is per comparison. **Rank** 1 of n+1 means "
            f"better than all n random subsets. **Smallest detectable difference**: the true "
            f"difference the same t test detects with 80% power at the 5% level; a verdict "
            f"on a smaller difference rests on few subsets. **Replicate sd**: the standard "
            f"deviation of an arm's replicate means (its training seeds, its selection seeds' "
            f"subsets, or the random subsets)."]


def _answer_phrase(name: str, row: Row) -> str:
    c = row.vs_random
    if c is None:
        return f"{name} has no random subsets to compare with"
    word = row.family_verdict or c.verdict
    phrase = {BETTER: f"{name} beats random subsets",
              WORSE: f"{name} is worse than random subsets",
              INSIDE_NOISE: f"{name} cannot be told from random subsets (inside noise)",
              NOT_ASSESSABLE: f"{name} cannot be judged against subset noise (fewer than two "
                              f"subsets on each side)"}[word]
    if word in (BETTER, WORSE) and abs(c.difference) < c.detectable:
        phrase += " by less than this run can reliably detect"
    return phrase


def _family_line(headline: list[Row]) -> str:
    sizes = {r.family_size for r in headline if r.family_size}
    if not sizes:
        return "No headline comparison could be assessed against subset noise."
    n = sizes.pop()
    return (f"This screen makes {n} comparison{'s' if n != 1 else ''} (each headline arm "
            f"against random subsets on each task); its verdicts are Holm-adjusted over "
            f"them, so the chance of any false *{BETTER}* or *{WORSE}* among them is at most "
            f"5%. The intervals beside them are unadjusted.")


def answer(rows: list[Row], methods: Sequence[str] = HEADLINE_METHODS) -> list[str]:
    """The first screen: one sentence per task, the size of the family and the table, for
    the headline `methods` (report.headline)."""
    names = arm_names(rows)
    headline = sorted((r for r in rows if r.method in methods), key=arm_order)
    if not headline:
        wanted = " or ".join(METHOD_TITLES.get(m, m) for m in methods)
        return [f"No {wanted} arm in this run: the tables below compare the others."]
    lines = []
    for task in task_order(headline):
        mine = [r for r in headline if r.task == task]
        phrases = "; ".join(_answer_phrase(names[r.arm], r) for r in mine)
        reachable = sorted(r.vs_random.detectable for r in mine if r.vs_random)
        finite = list(dict.fromkeys(_fmt(d) for d in reachable if math.isfinite(d)))
        span = finite[:1] + finite[-1:] if len(finite) > 1 else finite   # least to most
        reach = (f" This run could detect differences of about {' to '.join(span)} "
                 f"{unit(mine[0].metric)} or more." if finite else
                 " With fewer than two subsets on each side, this run cannot measure subset "
                 "noise." if reachable else "")
        lines += [f"- **{task_heading(rows, task)}**, `{task}`: {phrases}.{reach}"]
    lines += ["", _family_line(headline), "",
              "| task | arm | difference to random [95% interval, unadjusted] | "
              "Holm-adjusted p | verdict (Holm) | rank among random subsets | "
              "smallest detectable difference |", "|---|---|---|---|---|---|---|"]
    for task in task_order(headline):
        for r in (r for r in headline if r.task == task):
            c = r.vs_random
            word = r.family_verdict or (c.verdict if c else "-")
            lines.append(f"| {task_heading(rows, task)} | {names[r.arm]} "
                         f"| {_interval(c)} | {_fmt(r.family_p, 3)} | {word} | {_rank(c)} | "
                         f"{_fmt(c.detectable) if c else '-'} |")
    return lines


def compact_table(rows: list[Row], task: str) -> list[str]:
    """One task's arms: mean, seed spread, difference to random subsets, rank, verdict."""
    names = arm_names(rows)
    lines = ["| arm | mean | replicate sd | difference to random [95% interval] | "
             "rank among random subsets | verdict |", "|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r.task == task), key=arm_order):
        c = r.vs_random
        word = "reference" if r.method == REFERENCE_RANDOM else (c.verdict if c else "-")
        lines.append(f"| {names[r.arm]} | {_fmt(r.mean)} | "
                     f"{_fmt(r.sd)} | {_interval(c)} | {_rank(c)} | {word} |")
    return lines


def sentence(row: Row, name: str) -> str:
    """One arm on one task in plain words."""
    what = unit(row.metric)
    if row.method == REFERENCE_RANDOM:
        return (f"The random subsets ({row.n} models) score {_fmt(row.mean)} {what} on "
                f"average, with a between-subset standard deviation of {_fmt(row.sd)}; their "
                f"range ({_fmt(min(row.values))} to {_fmt(max(row.values))}) is the grey band "
                f"in the figure.")
    name = name[0].upper() + name[1:]
    seeds = f" (mean of {row.n} replicates)" if row.n > 1 else ""
    c = row.vs_random
    if c is None:
        return f"{name} scores {_fmt(row.mean)} {what}{seeds}; no random subsets to compare."
    side = "higher" if c.difference > 0 else "lower"
    interval = f"the 95% interval ({c.low:+.4f} to {c.high:+.4f})"
    why = {BETTER: f"better: {interval} lies entirely on the better side of zero",
           WORSE: f"worse: {interval} lies entirely on the worse side of zero",
           INSIDE_NOISE: f"inside noise: {interval} includes zero",
           NOT_ASSESSABLE: "not assessable: fewer than two subsets on each side, so "
                           "subset noise is unknown"}[c.verdict]
    text = (f"{name} scores {_fmt(row.mean)} {what}{seeds}, {abs(c.difference):.4f} {side} "
            f"than the random subsets, {why}; it ranks {_rank(c)} next to their "
            f"{c.n_reference} subsets.")
    if c.verdict in (BETTER, WORSE) and abs(c.difference) < c.detectable:
        text += (f" The difference is below the {_fmt(c.detectable)} this run can reliably "
                 f"detect, so it rests on few subsets.")
    return text


def details_table(rows: list[Row], task: str) -> list[str]:
    """Every statistic of one task, against random subsets and against full data."""
    names = arm_names(rows)
    lines = ["| arm | id | n | mean | replicate sd | vs random: difference [95% interval] | "
             "verdict | smallest detectable | vs full data: difference [95% interval] | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r.task == task), key=arm_order):
        rand, full = r.vs_random, r.vs_full
        lines.append(f"| {names[r.arm]} | `{arm_label(r)}` | {r.n} | "
                     f"{_fmt(r.mean)} | {_fmt(r.sd)} | {_interval(rand)} | "
                     f"{rand.verdict if rand else '-'} | {_fmt(rand.detectable) if rand else '-'}"
                     f" | {_interval(full)} | {full.verdict if full else '-'} |")
    return lines


def task_section(rows: list[Row], task: str) -> list[str]:
    """A task's compact table, one sentence per arm, then the details."""
    names = arm_names(rows)
    ordered = sorted((r for r in rows if r.task == task), key=arm_order)
    sentences = [f"- {sentence(r, names[r.arm])}" for r in ordered]
    return [f"## {task_heading(rows, task)}: `{task}`", "", *compact_table(rows, task), "",
            *sentences, "", "### Details", "", *details_table(rows, task), ""]


def cost_table(costs: list[Mapping]) -> list[str]:
    """Selection cost per method; a shared extraction pass is listed once."""
    lines = ["| method | target | wall time (s) | forward tokens | backward tokens | note |",
             "|---|---|---|---|---|---|"]
    for cost in costs:
        lines.append(f"| {cost['method']} | {cost.get('target') or '-'} | "
                     f"{_fmt(cost.get('wall_s'), 1)} | {cost.get('forward_tokens', 0):,} | "
                     f"{cost.get('backward_tokens', 0):,} | {cost.get('note', '')} |")
    return lines


def stability_table(costs: list[Mapping]) -> list[str]:
    """Each selector's overlap of its top subset between bootstrap resamples of its
    in-domain samples (naitbench.select.stability); empty when no manifest holds one. The
    draws resample the whole in-domain set, so a selector's subsets from several selection
    seeds share one measurement: it is listed once."""
    seen: set[str] = set()
    stable = []
    for cost in costs:
        key = repr((cost["method"], cost.get("target"), cost.get("stability")))
        if cost.get("stability") and key not in seen:
            seen.add(key)
            stable.append(cost)
    if not stable:
        return []
    lines = ["Mean Jaccard index of the selected subset between bootstrap resamples of the "
             "in-domain samples (every pair of draws; 1 = the subset does not depend on "
             "which samples were drawn, two random subsets of 10% about 0.05).", "",
             "| method | target | ratio | draws | mean Jaccard | sd | min |",
             "|---|---|---|---|---|---|---|"]
    for cost in stable:
        st = cost["stability"]
        lines.append(f"| {method_title(cost['method'])} | "
                     f"{cost.get('target') or '-'} | {st['ratio']:g} | {st['draws']} | "
                     f"{st['mean_jaccard']:.3f} | {st['sd_jaccard']:.3f} | "
                     f"{st['min_jaccard']:.3f} |")
    return lines


def markdown(title: str, meta: Mapping[str, str], rows: list[Row], figure: Path | None,
             costs: list[Mapping], sections: Mapping[str, list[str]], out_dir: Path,
             headline: Sequence[str] = HEADLINE_METHODS) -> str:
    """The whole report as Markdown; the figure is referenced relative to `out_dir`."""
    lines = [f"# {title}", "", "## Answer", "", *answer(rows, headline), "", *legend(rows), ""]
    if figure is not None:
        lines += [f"![Every replicate as a dot; the grey band is the range of the random "
                  f"subsets]({figure.relative_to(out_dir)})", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items()]
    lines.append("")
    for task in task_order(rows):
        lines += task_section(rows, task)
    lines += ["## Selection cost", "", *cost_table(costs), ""]
    if stability_table(costs):
        lines += ["## Selection stability", "", *stability_table(costs), ""]
    for heading, body in sections.items():
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


VERDICT_COLOURS = {BETTER: "#d9f2d9", WORSE: "#f8d7d7", INSIDE_NOISE: "#eeeeee",
                   NOT_ASSESSABLE: "#fff4d6"}
IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)")


def _inline(text: str) -> str:
    """Escape, then the few inline Markdown forms the report uses: `code`, **bold**, *em*."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def _cell(tag: str, text: str) -> str:
    colour = VERDICT_COLOURS.get(text) if tag == "td" else None
    style = f' style="background:{colour};white-space:nowrap"' if colour else ""
    return f"<{tag}{style}>{_inline(text)}</{tag}>"


def html_page(title: str, markdown_text: str, figures: Iterable[Path], out_dir: Path) -> str:
    """A self-contained HTML page: Markdown tables converted, figures embedded as base64."""
    body, table, items = [], [], []

    def flush() -> None:
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            head, *rest = [r for r in table if not set(r) <= set("|-")]
            split = [[c.strip() for c in line.strip("|").split("|")] for line in (head, *rest)]
            body.append("<table><tr>" + "".join(_cell("th", c) for c in split[0]) + "</tr>"
                        + "".join("<tr>" + "".join(_cell("td", c) for c in cells) + "</tr>"
                                  for cells in split[1:]) + "</table>")
            table.clear()

    embedded = {str(p.relative_to(out_dir)): p for p in figures}
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        image = IMAGE.fullmatch(line)
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif image:
            data = base64.b64encode(embedded[image["src"]].read_bytes()).decode()
            body.append(f'<img alt="{html.escape(image["alt"])}" '
                        f'src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}"
             "table{border-collapse:collapse;font-size:13px;margin:6px 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#f4f4f4}"
             "code{font-size:12px;color:#444}img{max-width:100%}li{margin:2px 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")

