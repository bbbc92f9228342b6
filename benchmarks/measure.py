"""How one scenario is measured inside its process: warm up, count, drive, time.

Every scenario -- reference or ours -- is measured by :func:`measure` with the same
driver, so the figures differ only by what the scenario's ``run_one`` does:

1. a warm-up of a few orders (``warmup_items``, distinct ids) runs first and is not
   counted: imports, graph compilation, first-call caches;
2. the counters (:class:`Counts`: model calls, tool calls, bus messages, checkpoint
   writes) are read before and after, and the difference is reported;
3. :func:`drive` runs the items with at most ``concurrency`` in flight and times
   each one around its ``run_one`` call, and the whole run by the wall clock;
4. the peak RSS of the process (``ru_maxrss``) is read at the end -- and, for a
   memory scenario, also after the first ``rss_mark`` items.
"""

from __future__ import annotations

import asyncio
import functools
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from typing import Any, TypeVar

__all__ = [
    "CheckpointCounter",
    "Counts",
    "Measurement",
    "Request",
    "Timings",
    "count_checkpoint_writes",
    "drive",
    "measure",
    "peak_rss_kb",
    "percentile",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """What a scenario process is asked to run.

    ``orders`` is already scaled by the scenario (e.g. fewer orders for a 30-step
    workflow); ``latency`` is the simulated model latency in seconds; ``options``
    are the registry entry's keyword arguments for its runner.
    """

    name: str
    orders: int
    concurrency: int
    latency: float = 0.0
    warmup: int = 10
    rss_mark: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counts:
    """Work counters of a scenario; ``None`` where the scenario has no such thing
    (no model in R1, no bus in orchestration, no checkpointer in choreography)."""

    model_calls: int | None = None
    tool_calls: int | None = None
    bus_messages: int | None = None
    bus_deliveries: int | None = None
    checkpoint_puts: int | None = None
    checkpoint_put_writes: int | None = None

    def minus(self, before: Counts) -> Counts:
        diff: dict[str, int | None] = {}
        for f in fields(self):
            now, then = getattr(self, f.name), getattr(before, f.name)
            diff[f.name] = None if now is None else now - (then or 0)
        return Counts(**diff)


@dataclass
class Measurement:
    """One scenario's figures from one process; what ``benchmarks.scenario`` prints.

    ``items`` are orders (or messages, for a broker floor: ``unit="msgs"``);
    counts are totals over the measured items. ``extra`` holds scenario-specific
    figures (e.g. ``rss_mark_kb``).
    """

    unit: str
    items: int
    concurrency: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    completed: int
    failed: int
    peak_rss_kb: int
    counts: Counts = field(default_factory=Counts)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Timings:
    """What :func:`drive` measured: the wall time and each item's latency (seconds)."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies) - self.failed


async def drive(items: Iterable[T], run_one: Callable[[T], Awaitable[bool]], *, concurrency: int) -> Timings:
    """Run ``run_one`` on every item with at most ``concurrency`` in flight.

    ``concurrency`` workers pull from one iterator -- the same bound as
    ``Coordinator.run_many``'s semaphore, without 10,000 pending coroutines that
    would distort a memory figure. Each item's latency is measured around its
    ``run_one`` call. ``run_one`` returns whether the item succeeded; an exception
    fails the whole run (after the other workers finish), so a broken scenario never
    reports a throughput.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    iterator = iter(items)
    latencies: list[float] = []
    failed = 0
    errors: list[BaseException] = []

    async def worker() -> None:
        nonlocal failed
        for item in iterator:
            began = time.perf_counter()
            try:
                ok = await run_one(item)
            except Exception as exc:
                errors.append(exc)
                ok = False
            latencies.append(time.perf_counter() - began)
            failed += not ok

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(latencies)} items raised; the first: {errors[0]!r}") from errors[0]
    return Timings(seconds=seconds, latencies=latencies, failed=failed)


async def measure(
    request: Request,
    *,
    items: Sequence[T],
    warmup_items: Sequence[T],
    run_one: Callable[[T], Awaitable[bool]],
    counts: Callable[[], Counts],
    unit: str = "orders",
) -> Measurement:
    """Warm up on ``warmup_items``, then time ``items`` (see the module docstring)."""
    if warmup_items:
        await drive(warmup_items, run_one, concurrency=min(request.concurrency, len(warmup_items)))
    before = counts()
    extra: dict[str, Any] = {}
    if request.rss_mark is not None and 0 < request.rss_mark < len(items):
        iterator = iter(items)
        first = await drive(islice(iterator, request.rss_mark), run_one, concurrency=request.concurrency)
        extra["rss_mark_items"] = request.rss_mark
        extra["rss_mark_kb"] = peak_rss_kb()
        rest = await drive(iterator, run_one, concurrency=request.concurrency)
        timings = Timings(
            seconds=first.seconds + rest.seconds,
            latencies=first.latencies + rest.latencies,
            failed=first.failed + rest.failed,
        )
    else:
        timings = await drive(items, run_one, concurrency=request.concurrency)
    done = counts().minus(before)
    return Measurement(
        unit=unit,
        items=len(timings.latencies),
        concurrency=request.concurrency,
        seconds=timings.seconds,
        rate=len(timings.latencies) / timings.seconds if timings.seconds > 0 else 0.0,
        p50_ms=percentile(timings.latencies, 50) * 1000,
        p99_ms=percentile(timings.latencies, 99) * 1000,
        completed=timings.completed,
        failed=timings.failed,
        peak_rss_kb=peak_rss_kb(),
        counts=done,
        extra=extra,
    )


@dataclass
class CheckpointCounter:
    """Calls of a checkpointer's ``aput`` (a checkpoint) and ``aput_writes`` (a task's
    pending writes) since it was attached."""

    puts: int = 0
    put_writes: int = 0


def count_checkpoint_writes(saver: Any) -> CheckpointCounter:
    """Count ``saver``'s ``aput`` and ``aput_writes`` calls from now on.

    Wraps the two methods on the instance (not the class), so it works on a saver
    someone else constructed -- in particular the ``InMemorySaver`` the orchestrator
    makes for itself when given none, and deletes ended threads from; passing a
    counting saver in instead would switch that deletion off and change what is
    measured. ``functools.wraps`` keeps the signatures, which LangGraph inspects
    (whether ``aput_writes`` takes ``task_path``).
    """
    counter = CheckpointCounter()
    aput = saver.aput
    aput_writes = saver.aput_writes

    @functools.wraps(aput)
    async def counted_aput(*args: Any, **kwargs: Any) -> Any:
        counter.puts += 1
        return await aput(*args, **kwargs)

    @functools.wraps(aput_writes)
    async def counted_aput_writes(*args: Any, **kwargs: Any) -> Any:
        counter.put_writes += 1
        return await aput_writes(*args, **kwargs)

    saver.aput = counted_aput
    saver.aput_writes = counted_aput_writes
    return counter


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated; 0 when empty."""
    if not values:
        return 0.0
    if len(values) == 1 or q <= 0:
        return float(min(values))
    if q >= 100:
        return float(max(values))
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def peak_rss_kb() -> int:
    """This process's peak resident set size so far, in KiB (Linux ``ru_maxrss``)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
