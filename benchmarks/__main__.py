"""``python -m benchmarks``: run the scenarios in interleaved rounds and print the table.

    python -m benchmarks [--orders N] [--concurrency C ...] [--rounds R] [--only NAMES ...]
                         [--json PATH] [--markdown PATH] [--seed S] [--list]

See ``docs/benchmarks.md`` for the method and the scenarios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from benchmarks.harness import aggregate, run_rounds
from benchmarks.registry import DEFAULT_CONCURRENCIES, FAMILIES, ScenarioSpec, scenarios, select
from benchmarks.report import machine, markdown_table, print_report, report_json

DEFAULT_ORDERS = 1000
DEFAULT_ROUNDS = 3


def _workload_rank(workload: str) -> tuple[int, int, str]:
    kind = workload.split(".", 1)[0]
    for rank, prefix in enumerate(("c", "latency", "steps", "rss")):
        if kind.startswith(prefix):
            digits = "".join(ch for ch in kind if ch.isdigit())
            return (rank, int(digits) if digits else 0, workload)
    return (9, 0, workload)


def _table_order(specs: Sequence[ScenarioSpec]) -> list[ScenarioSpec]:
    family_rank = {family.name: i for i, family in enumerate(FAMILIES)}
    return sorted(specs, key=lambda s: (_workload_rank(s.workload), family_rank.get(s.family.name, 99)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Coordination cost, model calls and scaling, against reference implementations, in one run.",
    )
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="base orders per scenario (default 1000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(DEFAULT_CONCURRENCIES),
        help="concurrencies of the throughput workload (default 1 100); latency and memory use the largest",
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="scenario names, families or globs (comma-separated also works); their references are added",
    )
    parser.add_argument("--no-refs", action="store_true", help="do not add the references of --only scenarios")
    parser.add_argument("--json", metavar="PATH", help="also write the full report as JSON (- for stdout)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round shuffles (default 0)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error(f"--orders must be at least 1, got {args.orders}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if min(args.concurrency) < 1:
        parser.error(f"--concurrency values must be at least 1, got {args.concurrency}")

    specs = scenarios(args.concurrency)
    only = [name for chunk in (args.only or []) for name in chunk.split(",")]
    try:
        chosen = _table_order(select(specs, only, with_refs=not args.no_refs))
    except ValueError as exc:
        parser.error(str(exc))
    err = Console(stderr=True)
    if args.list:
        for spec in _table_order(list(specs.values())):
            flags = "" if spec.default else " (only when named)"
            refs = ", ".join(f"{k}={v}" for k, v in spec.refs.items())
            size = f"{spec.orders(args.orders)} {'msgs' if spec.name.startswith('r3') else 'orders'}"
            print(f"{spec.name:45} {size:>12}  {spec.description}{flags}{'  [' + refs + ']' if refs else ''}")
        return 0

    header: dict[str, Any] = {
        "orders": args.orders,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "machine": machine(),
    }
    err.print(f"{len(chosen)} scenarios x {args.rounds} rounds, {args.orders} orders each (before scaling)")
    began = time.perf_counter()

    def progress(round_: int, spec: ScenarioSpec, result: dict[str, Any]) -> None:
        status = result.get("status")
        if status == "ok":
            what = f"{result['rate']:,.1f} {result['unit']}/s, {result['items']} {result['unit']}"
        else:
            what = f"{status}: {str(result.get('reason', ''))[:160]}"
        took = result.get("process_seconds")
        line = f"round {round_ + 1}/{args.rounds} {time.perf_counter() - began:6.0f}s  {spec.name}: {what}"
        err.print(escape(line + (f" ({took:.1f}s)" if took else "")), highlight=False, soft_wrap=True)

    raw = run_rounds(
        chosen,
        orders=args.orders,
        rounds=args.rounds,
        concurrencies=args.concurrency,
        seed=args.seed,
        on_result=progress,
    )
    header["seconds"] = round(time.perf_counter() - began, 1)
    rows = aggregate(chosen, raw)
    print_report(rows, header=header)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write(markdown_table(rows))
    if args.json:
        text = json.dumps(report_json(rows, header=header, raw=raw), indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json, "w", encoding="utf-8") as out:
                out.write(text + "\n")
    return 1 if any(row.status == "error" for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
