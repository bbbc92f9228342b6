"""Rendering a :class:`~agent_coordinator.lab.compare.ComparisonReport`: the trade-off table
(rich), Markdown, HTML and SVG charts.

The charts are hand-written SVG (grouped bars, stacked outcome bars, a latency
scatter per outage probe), so the report needs no plotting library; the HTML page
inlines them and is self-contained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_coordinator.core.run import MODES
from agent_coordinator.lab.compare import OUTCOMES, ChangeSize, ComparisonReport, Measurement
from agent_coordinator.lab.faults import Outage

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "bar_chart",
    "charts",
    "render_markdown",
    "render_table",
    "scatter_chart",
    "stacked_chart",
    "table_rows",
    "write_report",
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table_rows(report: ComparisonReport) -> list[tuple[str, str, str]]:
    """The trade-off table: (metric, orchestration, choreography); workload
    ``faults`` unless the metric names another."""
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: Callable[[Measurement], str], label: str = "faults") -> None:
        cells = [value(m) if (m := report.measurement(label, mode)) is not None else "-" for mode in MODES]
        rows.append((name, cells[0], cells[1]))

    def outcomes(m: Measurement) -> str:
        return "/".join(str(m.outcomes[k]) for k in OUTCOMES)

    row("outcomes (completed/compensated/attention/stuck)", outcomes)
    row("invariant violations", lambda m: str(m.violations))
    row("p50 latency ms", lambda m: _fmt(m.latency_ms.p50))
    row("p99 latency ms", lambda m: _fmt(m.latency_ms.p99))
    row("throughput orders/s", lambda m: _fmt(m.throughput))
    row("model calls per order (recorded / made)", lambda m: f"{_fmt(m.model_calls)} / {_fmt(m.model_calls_made)}")
    row("tool calls per order (recorded / at services)", lambda m: f"{_fmt(m.tool_calls)} / {_fmt(m.service_calls)}")
    row(
        "bus messages (published / delivered)",
        lambda m: "no bus" if m.bus_published is None else f"{m.bus_published} / {m.bus_delivered}",
    )
    row("checkpoints written", lambda m: _fmt(m.checkpoints))
    row("events logged", lambda m: str(m.events_logged))
    row("no faults: p50 / p99 ms", lambda m: f"{_fmt(m.latency_ms.p50)} / {_fmt(m.latency_ms.p99)}", "baseline")
    row("no faults: throughput orders/s", lambda m: _fmt(m.throughput), "baseline")
    explain = {e.mode: e for e in report.explain}
    cells = []
    for mode in MODES:
        e = explain.get(mode)
        cells.append("-" if e is None else f"{e.events} / {len(e.emitters)} / {e.places} / {e.carriers}")
    rows.append(("to explain one failed order: events / emitters / places / carriers", cells[0], cells[1]))
    for label in dict.fromkeys(m.label for m in report.measurements):
        if label.startswith("outage"):
            row(f"{label}: outcomes, max latency ms", lambda m: f"{outcomes(m)}, {_fmt(m.latency_ms.max)}", label)
    changes = {c.mode: c for c in report.changes}
    if changes:
        cells = []
        for mode in MODES:
            c = changes.get(mode)
            cells.append("-" if c is None else f"{c.code_lines} / {c.existing_files} / {len(c.new_event_types)}")
        rows.append(("add a notification step: code lines / files edited / new event types", cells[0], cells[1]))
    return rows


def render_table(report: ComparisonReport) -> Table:
    """The trade-off table as a rich Table."""
    from rich.table import Table

    table = Table(title=f"{report.workflow}: {report.orders} runs, faults {report.plan}")
    table.add_column("metric")
    for mode in MODES:
        table.add_column(mode, justify="right")
    for name, orch, chor in table_rows(report):
        table.add_row(name, orch, chor)
    return table


# -- charts (hand-written SVG: no plotting dependency) -------------------------------

_COLOURS = {
    "orchestration": "#3b6ea8",
    "choreography": "#d9822b",
    "completed": "#4c9a52",
    "compensated": "#d9a72b",
    "needs_attention": "#c0392b",
    "stuck": "#7f7f7f",
}


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
            f"{escape(title)}</text>",
            *body,
            "</svg>",
        ]
    )


def _vertical_label(y: float, text: str) -> str:
    return f'<text x="14" y="{y}" transform="rotate(-90 14 {y})" text-anchor="middle">{escape(text)}</text>'


def bar_chart(title: str, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], unit: str) -> str:
    """Grouped bars: one group per label in ``groups``, one bar per series."""
    width, height, left, bottom, top = 640, 320, 60, 60, 40
    plot_w, plot_h = width - left - 20, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = max(values) if values else 1.0
    peak = peak * 1.15 or 1.0
    body: list[str] = []
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{peak * i / 4:.3g}</text>')
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g]
            if v is None:
                continue
            h = plot_h * v / peak
            x = x0 + s * bar_w
            colour = _COLOURS.get(name, "#888")
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                f'fill="{colour}">'
                f"<title>{escape(name)} {escape(group)}: {v:g} {escape(unit)}</title></rect>"
            )
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" '
                f'font-size="10">{v:.3g}</text>'
            )
        body.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{escape(group)}</text>'
        )
    for s, name in enumerate(series):
        x = left + s * 150
        body.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{_COLOURS.get(name, "#888")}"/>')
        body.append(f'<text x="{x + 16}" y="{height - 12}">{escape(name)}</text>')
    body.append(_vertical_label(top + plot_h / 2, unit))
    return _svg(width, height, body, title)


def stacked_chart(title: str, groups: Sequence[str], stacks: Sequence[Mapping[str, int]]) -> str:
    """Horizontal stacked bars of outcomes, one per group."""
    width, left, row_h = 640, 210, 28
    height = 60 + row_h * len(groups) + 30
    total = max((sum(s.values()) for s in stacks), default=1) or 1
    plot_w = width - left - 20
    body: list[str] = []
    for g, (group, stack) in enumerate(zip(groups, stacks, strict=True)):
        y = 36 + g * row_h
        body.append(f'<text x="{left - 6}" y="{y + 16}" text-anchor="end">{escape(group)}</text>')
        x = float(left)
        for outcome in OUTCOMES:
            n = stack.get(outcome, 0)
            if not n:
                continue
            w = plot_w * n / total
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{_COLOURS[outcome]}">'
                f"<title>{escape(group)}: {n} {outcome}</title></rect>"
            )
            if w > 18:
                body.append(f'<text x="{x + w / 2:.1f}" y="{y + 15}" text-anchor="middle" fill="white">{n}</text>')
            x += w
    for i, outcome in enumerate(OUTCOMES):
        x = left + i * 110
        body.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{_COLOURS[outcome]}"/>')
        body.append(f'<text x="{x + 16}" y="{height - 12}">{outcome}</text>')
    return _svg(width, height, body, title)


def scatter_chart(
    title: str, series: Mapping[str, Sequence[tuple[float, float | None, str]]], marker_ms: float | None
) -> str:
    """Latency (y) by start time (x) of each run, one colour per series; a run that
    never ended is drawn at the top; ``marker_ms`` draws a vertical line (the outage's end)."""
    width, height, left, bottom, top = 640, 320, 60, 50, 40
    plot_w, plot_h = width - left - 20, height - top - bottom
    xs = [x for pts in series.values() for x, _, _ in pts] + ([marker_ms] if marker_ms else [])
    ys = [y for pts in series.values() for _, y, _ in pts if y is not None]
    max_x = (max(xs) if xs else 1.0) * 1.05 or 1.0
    max_y = (max(ys) if ys else 1.0) * 1.1 or 1.0
    body: list[str] = []
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{max_y * i / 4:.3g}</text>')
        x = left + plot_w * i / 4
        body.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{max_x * i / 4:.3g}</text>')
    if marker_ms:
        x = left + plot_w * marker_ms / max_x
        body.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#c0392b" stroke-dasharray="4 3"/>'
        )
        body.append(f'<text x="{x + 4:.1f}" y="{top + 12}" fill="#c0392b">participant back</text>')
    for name, points in series.items():
        colour = _COLOURS.get(name, "#888")
        for x_value, y_value, outcome in points:
            cx = left + plot_w * x_value / max_x
            cy = top + (plot_h * (1 - y_value / max_y) if y_value is not None else 0)
            shape = "circle" if outcome == "completed" else "rect"
            if shape == "circle":
                body.append(
                    f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}"><title>{outcome}</title></circle>'
                )
            else:
                body.append(
                    f'<rect x="{cx - 3.5:.1f}" y="{cy - 3.5:.1f}" width="7" height="7" fill="none" stroke="{colour}" '
                    f'stroke-width="1.5"><title>{outcome}</title></rect>'
                )
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 22}" text-anchor="middle">run started at (ms)</text>')
    body.append(_vertical_label(top + plot_h / 2, "latency (ms)"))
    for s, name in enumerate(series):
        x = left + s * 170
        body.append(f'<circle cx="{x + 6}" cy="{height - 8}" r="4" fill="{_COLOURS.get(name, "#888")}"/>')
        body.append(f'<text x="{x + 14}" y="{height - 4}">{escape(name)}</text>')
    body.append(
        f'<text x="{width - 20}" y="{height - 4}" text-anchor="end">dot: completed, square: not completed</text>'
    )
    return _svg(width, height, body, title)


def charts(report: ComparisonReport) -> dict[str, str]:
    """The report's charts: file name -> SVG text."""
    labels = list(dict.fromkeys(m.label for m in report.measurements))
    out: dict[str, str] = {}
    groups, stacks = [], []
    for label in labels:
        for mode in MODES:
            m = report.measurement(label, mode)
            if m is not None:
                groups.append(f"{label[:22]} / {mode[:5]}")
                stacks.append(m.outcomes)
    out["outcomes.svg"] = stacked_chart("Outcomes per workload and mode", groups, stacks)

    def series(value: Callable[[Measurement], float | None]) -> dict[str, list[float | None]]:
        return {
            mode: [None if (found := report.measurement(label, mode)) is None else value(found) for label in labels]
            for mode in MODES
        }

    short = [label.split(" ")[0] if not label.startswith("outage") else label[7:][:18] for label in labels]
    out["latency.svg"] = bar_chart("p99 latency per workload", short, series(lambda m: m.latency_ms.p99), "ms")
    out["throughput.svg"] = bar_chart("Throughput per workload", short, series(lambda m: m.throughput), "orders/s")
    faults = {mode: report.measurement("faults", mode) for mode in MODES}
    cost_groups = ["model calls made", "tool calls at services", "bus deliveries", "checkpoints"]
    cost: dict[str, list[float | None]] = {}
    for mode, m in faults.items():
        if m is None:
            continue
        n = max(m.orders, 1)
        cost[mode] = [
            m.model_calls_made,
            m.service_calls,
            None if m.bus_delivered is None else round(m.bus_delivered / n, 2),
            None if m.checkpoints is None else round(m.checkpoints / n, 2),
        ]
    out["cost.svg"] = bar_chart("Work per order under faults", cost_groups, cost, "per order")
    for label in labels:
        if not label.startswith("outage"):
            continue
        points: dict[str, list[tuple[float, float | None, str]]] = {}
        for mode in MODES:
            m = report.measurement(label, mode)
            if m is not None:
                points[mode] = [(start, latency, outcome) for _, start, latency, outcome in m.per_order]
        outage = Outage.parse(label[len("outage ") :])
        name = f"outage-{outage.participant}-{outage.for_ms:g}ms.svg"
        out[name] = scatter_chart(
            f"{label}: latency of each run", points, (outage.start_ms or 0.0) + (outage.for_ms or 0.0)
        )
    return out


def render_markdown(report: ComparisonReport, chart_names: Sequence[str], command: str | None) -> str:
    lines = [f"# Orchestration vs choreography, measured: `{report.workflow}`", ""]
    if command:
        lines += ["Produced by:", "", "```console", f"$ {command}", "```", ""]
    lines += [
        f"{report.orders} runs ({report.source or 'inputs'}), {report.concurrency} in flight, choreography deadline "
        f"{report.deadline_s:g} s. Fault plan: `{report.plan}`.",
        "",
        "## The trade-off table (workload `faults` unless the row says otherwise)",
        "",
        "| metric | orchestration | choreography |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {orch} | {chor} |" for name, orch, chor in table_rows(report)]
    lines += ["", "![outcomes](charts/outcomes.svg)", "", "![latency](charts/latency.svg)", ""]
    lines += ["![throughput](charts/throughput.svg)", "", "![cost](charts/cost.svg)", ""]
    columns = [
        "workload",
        "mode",
        "completed",
        "compensated",
        "attention",
        "stuck",
        "violations",
        "p50 ms",
        "p99 ms",
        "orders/s",
        "model calls made/order",
        "bus delivered",
        "checkpoints",
    ]
    lines += ["## Every workload", "", f"| {' | '.join(columns)} |", "| --- | --- |" + " ---: |" * (len(columns) - 2)]
    for m in report.measurements:
        o = m.outcomes
        lines.append(
            f"| {m.label} | {m.mode} | {o['completed']} | {o['compensated']} | {o['needs_attention']} | {o['stuck']} | "
            f"{m.violations} | {_fmt(m.latency_ms.p50)} | {_fmt(m.latency_ms.p99)} | {_fmt(m.throughput)} | "
            f"{_fmt(m.model_calls_made)} | {_fmt(m.bus_delivered)} | {_fmt(m.checkpoints)} |"
        )
    lines += ["", "## While one participant is down", ""]
    lines += [f"- {story}" for story in report.outages]
    lines += [""] + [f"![{n}](charts/{n})" for n in chart_names if n.startswith("outage-")] + [""]
    lines += ["## Explaining one failed order", ""]
    for e in report.explain:
        if e.order_id is None:
            lines.append(f"- {e.mode}: no order failed")
            continue
        carriers = "bus deliveries" if e.mode == "choreography" else "checkpoints of its thread"
        lines.append(
            f"- **{e.mode}**: `{e.order_id}` ({e.status}): {e.events} events from {len(e.emitters)} emitters "
            f"({', '.join(e.emitters)}); {e.carriers} {carriers}; places to look without a shared event log: "
            f"{e.places}. Median over the {e.failed_orders} failed orders: {e.median_events:g} events, "
            f"{e.median_carriers:g} {carriers}."
        )
    example = next((e for e in report.explain if e.trace), None)
    if example is not None:
        lines += ["", f"The trace of `{example.order_id}` (`coordinator trace {example.order_id}`):", "", "```"]
        lines += [*example.trace, "```", ""]
    if report.changes:
        lines += ["## Adding a notification step", "", "| | orchestration | choreography |", "| --- | --- | --- |"]
        by_mode = {change.mode: change for change in report.changes}
        orch, chor = by_mode.get("orchestration"), by_mode.get("choreography")
        if orch is not None and chor is not None:

            def pair(name: str, value: Callable[[ChangeSize], str]) -> str:
                return f"| {name} | {value(orch)} | {value(chor)} |"

            lines += [
                pair("files", lambda c: ", ".join(f"`{f}`" for f in c.files)),
                pair("code lines (no blanks, comments, docstrings)", lambda c: str(c.code_lines)),
                pair("all lines", lambda c: str(c.total_lines)),
                pair("existing files edited", lambda c: str(c.existing_files)),
                pair("new event types in the saga", lambda c: ", ".join(c.new_event_types) or "none"),
                pair("extra model calls per completed order", lambda c: f"{c.extra_model_calls_per_order:g}"),
                pair("when a notification fails", lambda c: c.failure_effect),
                pair("verified by running it", lambda c: c.verified),
                "",
            ]
    lines += ["## Invariant violations", ""]
    if not report.violations:
        lines += ["None: every invariant held in every workload and mode.", ""]
    else:
        for v in report.violations:
            lines.append(f"- {v['workload']} / {v['mode']}: [{v['rule']}] {v['workflow_id'] or '*'}: {v['message']}")
        lines.append("")
    lines += ["## The fault schedule", "", "```", *report.schedule, "```", "", "## Notes", ""]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _html(markdown_text: str, chart_svgs: Mapping[str, str]) -> str:
    """A self-contained HTML page of the report (charts inlined), from its Markdown."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>compare</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td:not(:first-child){text-align:right}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>",
        "</head><body>",
    ]
    in_code = False
    table: list[list[str]] = []

    def inline(text: str) -> str:
        parts = text.split("`")
        html = "".join(escape(p) if i % 2 == 0 else f"<code>{escape(p)}</code>" for i, p in enumerate(parts))
        return html.replace("**", "")

    def flush() -> None:
        if table:
            out.append("<table>")
            for r, cells in enumerate(table):
                tag = "th" if r == 0 else "td"
                out.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
            out.append("</table>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("```"):
            flush()
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1].removeprefix("charts/")
            out.append(f"<div>{chart_svgs.get(name, '')}</div>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(report: ComparisonReport, directory: Path, *, command: str | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``report.json`` and ``charts/*.svg`` into
    ``directory`` (created); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "charts").mkdir(exist_ok=True)
    svgs = charts(report)
    written = []
    for name, svg in svgs.items():
        path = directory / "charts" / name
        path.write_text(svg + "\n", encoding="utf-8")
        written.append(path)
    markdown = render_markdown(report, list(svgs), command)
    for name, text in (
        ("report.md", markdown),
        ("report.html", _html(markdown, svgs)),
        ("report.json", report.model_dump_json(indent=2) + "\n"),
    ):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
