"""``GET /metrics`` of ``coordinator serve``: Prometheus metrics read from the event log.

The event log is the one record every process writes -- the server, workers on other
machines, a ``resume`` -- so the metrics are computed from it at each scrape, and
say the same whichever server is asked: runs by workflow, mode and status; each
step's duration (from its trigger to its outcome) by outcome; model calls, tokens,
tool calls and re-asks by step; compensations by outcome; events by type; and the
dead letters the bus holds. A scrape reads the whole log (one query): fine for the
logs of a deployment's days, not for years of them -- a log that large wants its
ended runs archived first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_coordinator.core.eventlog import SqlEventLog
from agent_coordinator.core.events import Event
from agent_coordinator.core.saga import Saga

__all__ = ["STEP_BUCKETS", "RunMetrics"]

#: Upper bounds (seconds) of the step duration histogram's buckets.
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

OUTCOMES = {"succeeded", "failed", "stopped"}
UNDOS = {"compensated", "compensation_failed"}


class RunMetrics(Collector):
    """A collector over ``event_log`` for ``saga``'s workflow; ``status_of`` reads a
    run's status from its last event; a run its log has no record of counts in
    ``default_mode``. Set ``dead_letters`` before a scrape (the bus is asked
    asynchronously)."""

    def __init__(
        self, event_log: SqlEventLog, saga: Saga, status_of: Callable[[Event], str], default_mode: str
    ) -> None:
        self.event_log = event_log
        self.saga = saga
        self.status_of = status_of
        self.default_mode = default_mode
        self.dead_letters: int | None = None

    def collect(self) -> Iterator[Metric]:
        workflow = self.saga.workflow.name
        runs = GaugeMetricFamily(
            "coordinator_runs",
            "Runs by workflow, mode and status, as the event log records them",
            labels=["workflow", "mode", "status"],
        )
        statuses: Counter[tuple[str, str]] = Counter()
        modes = {record.run_id: record.mode for record in self.event_log.all_runs()}  # one read, not one per run
        for _subject, run_id, event in self.event_log.latest():
            statuses[(modes.get(run_id, self.default_mode), self.status_of(event))] += 1
        for (mode, status), count in sorted(statuses.items()):
            runs.add_metric([workflow, mode, status], count)
        yield runs
        yield from self._from_events(workflow, self.event_log.every_event())
        if self.dead_letters is not None:
            letters = GaugeMetricFamily("coordinator_dead_letters", "Events the bus gave up on", labels=["workflow"])
            letters.add_metric([workflow], self.dead_letters)
            yield letters

    def _from_events(self, workflow: str, events: Iterable[Event]) -> Iterator[Metric]:
        at: dict[str, float] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        model_calls: Counter[str] = Counter()
        tokens: Counter[tuple[str, str]] = Counter()
        tool_calls: Counter[str] = Counter()
        reasks: Counter[str] = Counter()
        undos: Counter[tuple[str, str]] = Counter()
        by_type: Counter[str] = Counter()
        for event in events:
            at[event.id] = event.time.timestamp()
            by_type[event.type] += 1
            kind, step = self.saga.kind(event.type)
            if step is None or (kind not in OUTCOMES and kind not in UNDOS):
                continue
            if kind in UNDOS:
                undos[(step, kind)] += 1
            if event.causation_id in at:
                durations.setdefault((step, kind), []).append(at[event.id] - at[event.causation_id])
            usage = event.data.get("usage")
            if isinstance(usage, dict):
                model_calls[step] += int(usage.get("model_calls", 0))
                tool_calls[step] += int(usage.get("tool_calls", 0))
                tokens[(step, "input")] += int(usage.get("input_tokens", 0))
                tokens[(step, "output")] += int(usage.get("output_tokens", 0))
            reasks[step] += len(event.data.get("rejections") or [])
        histogram = HistogramMetricFamily(
            "coordinator_step_seconds",
            "A step's time from its trigger to its outcome (or an undo's)",
            labels=["workflow", "step", "outcome"],
        )
        for (step, kind), seconds in sorted(durations.items()):
            buckets = [(str(bound), sum(1 for s in seconds if s <= bound)) for bound in STEP_BUCKETS]
            buckets.append(("+Inf", len(seconds)))
            histogram.add_metric([workflow, step, kind], buckets, sum(seconds))
        yield histogram
        yield _counter("coordinator_model_calls", "Model calls by step", workflow, "step", model_calls)
        yield _counter("coordinator_tool_calls", "Tool calls by step, retries included", workflow, "step", tool_calls)
        yield _counter("coordinator_reasks", "Model answers refused and asked again, by step", workflow, "step", reasks)
        token_family = CounterMetricFamily(
            "coordinator_tokens", "Model tokens by step", labels=["workflow", "step", "kind"]
        )
        for (step, kind), count in sorted(tokens.items()):
            token_family.add_metric([workflow, step, kind], count)
        yield token_family
        undo_family = CounterMetricFamily(
            "coordinator_compensations", "Undos by step and outcome", labels=["workflow", "step", "outcome"]
        )
        for (step, kind), count in sorted(undos.items()):
            undo_family.add_metric([workflow, step, kind], count)
        yield undo_family
        yield _counter("coordinator_events", "Events in the log by type", workflow, "type", by_type)


def _counter(name: str, help: str, workflow: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help, labels=["workflow", label])
    for key, count in sorted(counts.items()):
        family.add_metric([workflow, key], count)
    return family
