"""Run one scenario in this process and print its result as one JSON object.

    python -m benchmarks.scenario NAME [--orders N] [--concurrency C ...] [--json PATH|-] [--profile PATH]

The harness starts one such process per scenario per round, so no scenario shares
an interpreter, caches, a heap or an event loop with another. ``NAME`` is a name
from :func:`benchmarks.registry.scenarios` built with the same ``--concurrency``
list the harness was given. The JSON has ``status`` ``"ok"`` (with the
:class:`~benchmarks.measure.Measurement` fields), ``"skipped"`` (with ``reason``:
a backend is missing or unreachable) or ``"error"`` (with ``reason``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from benchmarks.backends import ScenarioSkipped
from benchmarks.measure import Measurement, Request
from benchmarks.registry import DEFAULT_CONCURRENCIES, ScenarioSpec, scenarios

__all__ = ["main", "request_for", "run_scenario"]

DEFAULT_ORDERS = 1000


def warmup_for(orders: int) -> int:
    """Warm-up orders for a run of ``orders``: 1 to 10, about 5%."""
    return max(1, min(10, orders // 20))


def request_for(spec: ScenarioSpec, orders: int) -> Request:
    """The :class:`Request` for ``spec`` when the harness was asked for ``orders``."""
    n = spec.orders(orders)
    mark = round(n * spec.rss_mark_fraction) if spec.rss_mark_fraction else None
    return Request(
        name=spec.name,
        orders=n,
        concurrency=spec.concurrency,
        latency=spec.latency,
        warmup=warmup_for(n),
        rss_mark=mark,
        options=dict(spec.options),
    )


def run_scenario(spec: ScenarioSpec, orders: int, *, profile: str | None = None) -> dict[str, Any]:
    """Run ``spec`` here and return its JSON-ready result (never raises).

    ``profile`` names a file for a pyinstrument profile of the whole run (setup and
    warm-up included): HTML when it ends in ``.html``, text otherwise.
    """
    request = request_for(spec, orders)
    head: dict[str, Any] = {"name": spec.name, "orders_requested": request.orders}
    module_name, _, function_name = spec.family.runner.partition(":")
    try:
        runner: Callable[[Request], Coroutine[Any, Any, Measurement]] = getattr(
            importlib.import_module(module_name), function_name
        )
        measurement: Measurement
        if profile is None:
            measurement = asyncio.run(runner(request))
        else:
            measurement = _profiled(lambda: asyncio.run(runner(request)), profile)
    except ScenarioSkipped as exc:
        return {**head, "status": "skipped", "reason": str(exc)}
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)[-12:])
        return {**head, "status": "error", "reason": f"{type(exc).__name__}: {exc}", "traceback": detail}
    return {**head, "status": "ok", **measurement.to_json()}


def _profiled(call: Callable[[], Measurement], path: str) -> Measurement:
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument") from None
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        return call()
    finally:
        profiler.stop()
        with open(path, "w", encoding="utf-8") as out:
            out.write(profiler.output_html() if path.endswith(".html") else profiler.output_text(show_all=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="scenario name, e.g. ours_orchestration_memory.c100")
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="base number of orders (default 1000)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCIES), help="as given to the harness"
    )
    parser.add_argument("--json", default="-", help="where to write the result; - for stdout (default)")
    parser.add_argument("--profile", metavar="PATH", help="write a pyinstrument profile of the run (.html or text)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    specs = scenarios(args.concurrency)
    spec = specs.get(args.name)
    if spec is None:
        parser.error(f"unknown scenario {args.name!r}; known: {', '.join(specs)}")
    if args.orders < 1:
        parser.error(f"--orders must be at least 1, got {args.orders}")
    result = run_scenario(spec, args.orders, profile=args.profile)
    text = json.dumps(result)
    if args.json == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    return 0 if result["status"] != "error" else 1


if __name__ == "__main__":
    raise SystemExit(main())
