"""``python -m tests.process.torture``: run the crash-test harness from the repository root.

    python -m tests.process.torture --backend sqlite --orders 1000 --kills 40 --seed 7 --json report.json
    python -m tests.process.torture --backend all --orders 300 --kills 20

Exit code: 0 every backend passed; 1 a backend failed (the report says how);
2 the harness could not run (a missing binary, a service that did not start).
See docs/torture.md.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.process.torture.harness import BACKENDS, TortureConfig, TortureReport, run_torture
from tests.process.torture.processes import HarnessError
from tests.process.torture.report import render, write_json
from tests.process.torture.schedule import KillKind


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.process.torture",
        description="Run a batch of orders through real coordinator processes while killing them on a seeded "
        "schedule, then judge the services' state and the event log with an independent checker.",
    )
    parser.add_argument(
        "--backend",
        required=True,
        help=f"{' | '.join(BACKENDS)}, several separated by commas, or all",
    )
    parser.add_argument("--orders", type=int, default=1000, help="orders in the batch (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=40, help="SIGKILL moments to plan (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the orders and the schedule (default: %(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=24, help="orders in flight at once (default: %(default)s)")
    parser.add_argument(
        "--latency-ms", type=float, default=4.0, help="services' latency per call (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--workdir", type=Path, help="where state and logs go (default: a new temporary directory)")
    parser.add_argument(
        "--stall-s",
        type=float,
        default=30.0,
        help="no new event for this long while orders are unfinished is a stall (default: %(default)s; "
        "choreography: at least the deadline + 10)",
    )
    parser.add_argument(
        "--deadline-s", type=float, default=60.0, help="choreography: the owner's run deadline (default: %(default)s)"
    )
    parser.add_argument("--time-limit-s", type=float, help="stop the kill schedule after this long (default: none)")
    parser.add_argument("--keep-schema", action="store_true", help="postgresql: keep the schema for a post-mortem")
    parser.add_argument(
        "--kinds",
        help="only these kill kinds, separated by commas (random, startup, compensation, double, resume; "
        "choreography also owner, participant, broker); default: a seeded mix of all",
    )
    parser.add_argument(
        "--closing-rerun",
        action="store_true",
        help="choreography: after the closing resume, also run the same file again (orchestration always does)",
    )
    args = parser.parse_args(argv)
    backends = list(BACKENDS) if args.backend == "all" else [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(
            f"unknown --backend {', '.join(unknown) or args.backend!r}; choose from {', '.join(BACKENDS)} or all"
        )
    if args.orders < 1 or args.kills < 0:
        parser.error("--orders must be at least 1 and --kills at least 0")
    kinds = [k.strip() for k in (args.kinds or "").split(",") if k.strip()]
    wrong = [k for k in kinds if k not in {kind.value for kind in KillKind}]
    if wrong:
        parser.error(f"unknown --kinds {', '.join(wrong)}; choose from {', '.join(k.value for k in KillKind)}")
    args.kinds = tuple(kinds) or None
    args.backends = backends
    return args


async def run_all(args: argparse.Namespace) -> list[TortureReport]:
    # SIGTERM (and SIGINT) cancel the run: every process and broker it started is killed.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    reports = []
    for backend in args.backends:
        workdir = args.workdir / backend if args.workdir else None
        config = TortureConfig(
            backend=backend,
            orders=args.orders,
            kills=args.kills,
            seed=args.seed,
            concurrency=args.concurrency,
            latency_ms=args.latency_ms,
            workdir=workdir,
            stall_s=args.stall_s,
            deadline_s=args.deadline_s,
            time_limit_s=args.time_limit_s,
            keep_schema=args.keep_schema,
            closing_rerun=args.closing_rerun,
            kinds=args.kinds,
        )
        print(f"torture: {backend}, {args.orders} orders, {args.kills} kills, seed {args.seed} ...", file=sys.stderr)
        report = await run_torture(config)
        print(f"torture: {backend} {'passed' if report.passed else 'FAILED'} ({report.workdir})", file=sys.stderr)
        reports.append(report)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        reports = asyncio.run(run_all(args))
    except HarnessError as exc:
        print(f"torture: the harness could not run: {exc}", file=sys.stderr)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("torture: stopped; the processes it started are gone", file=sys.stderr)
        return 130
    print(render(reports))
    if args.json:
        write_json(reports, args.json)
        print(f"\nreport written to {args.json}")
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
