"""Every scenario the harness knows, by name: one entry each.

A scenario is a *family* (what runs: ``r1``, ``r2``, ``ours_orchestration_memory``,
...) crossed with a *workload* (how much and how: ``c100``, ``latency100ms.c100``,
``steps10.c1``, ``rss.c100``); its name is ``<family>.<workload>``. Adding a backend
(PostgreSQL checkpoints, a RabbitMQ or NATS bus) is one :class:`Family` in
:data:`FAMILIES`; adding a workload is one branch in :func:`scenarios`.

This module imports nothing heavy: the harness reads it without loading LangGraph.
A scenario's runner is named as ``"module:function"`` and imported in its own
process by :mod:`benchmarks.scenario`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "DEFAULT_CONCURRENCIES",
    "FAMILIES",
    "LATENCY_SECONDS",
    "STEP_COUNTS",
    "Family",
    "ScenarioSpec",
    "scenarios",
    "select",
]

DEFAULT_CONCURRENCIES = (1, 100)
#: Simulated model latency of the latency workload.
LATENCY_SECONDS = 0.1
#: Step counts of the generated-workflow workload.
STEP_COUNTS = (3, 10, 30)
#: Orders of the memory workload, as a multiple of ``--orders`` (10,000 for 1,000).
RSS_SCALE = 10
#: Concurrency of the generated-workflow workload.
STEPS_CONCURRENCY = 1
#: Orders of the latency workload, as a multiple of ``--orders``.
LATENCY_SCALE = 0.5


@dataclass(frozen=True)
class Family:
    """What a scenario runs.

    * ``runner`` -- ``"module:function"``, an ``async (Request) -> Measurement``;
    * ``options`` -- keyword options for the runner (``checkpointer=``, ``bus=``, ...);
    * ``kind`` -- ``"reference"`` or ``"ours"``;
    * ``workloads`` -- which workloads it takes part in (``throughput``, ``latency``,
      ``steps``, ``rss``; ``rss!`` = only when named with ``--only``);
    * ``second_ref`` -- the family whose ratio fills the second ratio column:
      ``r2`` (or ``r2s`` for durable checkpoints), ``r3_*`` for broker buses;
    * ``order_scale`` -- run this many times ``--orders`` (e.g. slow references);
    * ``label`` -- how a ratio to this family is labelled in the table;
    * ``default`` -- False: its scenarios run only when ``--only`` names them.
    """

    name: str
    runner: str
    description: str
    kind: str = "ours"
    label: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    workloads: frozenset[str] = frozenset({"throughput"})
    second_ref: str | None = "r2"
    order_scale: float = 1.0
    default: bool = True


FAMILIES: tuple[Family, ...] = (
    Family(
        "r1",
        "benchmarks.references:run_r1",
        "R1: hand-written asyncio saga awaiting the tool coroutines (no model)",
        kind="reference",
        label="R1",
        workloads=frozenset({"throughput", "steps", "rss"}),
        second_ref=None,
    ),
    Family(
        "r2",
        "benchmarks.references:run_r2",
        "R2: function supervisor + 3 prebuilt ReAct agents, InMemorySaver",
        kind="reference",
        label="R2",
        workloads=frozenset({"throughput", "latency", "rss!"}),
        second_ref=None,
        order_scale=0.2,
    ),
    Family(
        "r2s",
        "benchmarks.references:run_r2",
        "R2s: R2 on AsyncSqliteSaver (a file)",
        kind="reference",
        label="R2s",
        options={"checkpointer": "sqlite"},
        second_ref=None,
        order_scale=0.1,
    ),
    Family(
        "r3_rabbitmq",
        "benchmarks.references:run_r3_rabbitmq",
        "R3: aio-pika one hop, durable classic queue, confirms, manual ack (msgs)",
        kind="reference",
        label="R3amqp",
        second_ref=None,
        default=False,
    ),
    Family(
        "r3_rabbitmq_quorum",
        "benchmarks.references:run_r3_rabbitmq",
        "R3: aio-pika one hop, quorum queue, confirms, manual ack (msgs)",
        kind="reference",
        label="R3amqp-q",
        options={"queue_type": "quorum"},
        second_ref=None,
    ),
    Family(
        "r3_nats",
        "benchmarks.references:run_r3_nats",
        "R3: nats-py JetStream one hop, publish ack, manual ack (msgs)",
        kind="reference",
        label="R3nats",
        second_ref=None,
    ),
    Family(
        "ours_orchestration_memory",
        "benchmarks.ours:run_orchestration",
        "ours: orchestration, default in-memory checkpoints (cleared per run)",
        options={"checkpointer": "default"},
        workloads=frozenset({"throughput", "latency", "steps", "rss"}),
    ),
    Family(
        "ours_orchestration_model_supervisor",
        "benchmarks.ours:run_orchestration",
        "ours: orchestration, model-driven supervisor (handoff tools), in-memory checkpoints",
        options={"checkpointer": "default", "supervisor": "model"},
        workloads=frozenset({"throughput", "latency"}),
        order_scale=0.5,
    ),
    Family(
        "ours_orchestration_sqlite",
        "benchmarks.ours:run_orchestration",
        "ours: orchestration, AsyncSqliteSaver checkpoints (a file)",
        options={"checkpointer": "sqlite"},
        second_ref="r2s",
        order_scale=0.2,
    ),
    Family(
        "ours_orchestration_postgres",
        "benchmarks.ours:run_orchestration",
        "ours: orchestration, AsyncPostgresSaver checkpoints (pooled)",
        options={"checkpointer": "postgres"},
        second_ref="r2s",
        order_scale=0.2,
    ),
    Family(
        "ours_choreography_memory",
        "benchmarks.ours:run_choreography",
        "ours: choreography on the in-memory bus",
        options={"bus": "memory://"},
        workloads=frozenset({"throughput", "latency", "steps", "rss"}),
    ),
    Family(
        "ours_choreography_rabbitmq",
        "benchmarks.ours:run_choreography",
        "ours: choreography on RabbitMQ",
        options={"bus": "amqp://guest:guest@127.0.0.1:5672/"},
        second_ref="r3_rabbitmq_quorum",
        order_scale=0.2,
    ),
    Family(
        "ours_choreography_nats",
        "benchmarks.ours:run_choreography",
        "ours: choreography on NATS JetStream",
        options={"bus": "nats://127.0.0.1:4222"},
        second_ref="r3_nats",
        order_scale=0.2,
    ),
)


@dataclass(frozen=True)
class ScenarioSpec:
    """One runnable scenario: a family on a workload.

    ``refs`` maps a ratio column (``"R1"``, ``"R2"``) to the name of the scenario
    to divide by, run in the same round; ``default`` False means it runs only when
    ``--only`` names it; ``once`` means it runs in the first round only (a memory
    figure, which repeating would not sharpen but would cost minutes).
    """

    name: str
    family: Family
    workload: str
    concurrency: int
    order_scale: float = 1.0
    latency: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    refs: Mapping[str, str] = field(default_factory=dict)
    rss_mark_fraction: float | None = None
    default: bool = True
    once: bool = False

    @property
    def description(self) -> str:
        return self.family.description

    def orders(self, orders: int) -> int:
        """How many orders (or messages) this scenario runs for ``--orders``."""
        return max(1, round(orders * self.order_scale))

    @property
    def steps(self) -> int | None:
        steps = self.options.get("steps")
        return int(steps) if steps is not None else None


def scenarios(concurrencies: Sequence[int] = DEFAULT_CONCURRENCIES) -> dict[str, ScenarioSpec]:
    """Every scenario, by name, for the throughput ``concurrencies`` given.

    The latency and memory workloads run at the highest of ``concurrencies``; the
    generated-workflow workload at :data:`STEPS_CONCURRENCY`.
    """
    if not concurrencies or min(concurrencies) < 1:
        raise ValueError(f"concurrencies must be positive, got {list(concurrencies)}")
    top = max(concurrencies)
    specs: dict[str, ScenarioSpec] = {}

    def add(family: Family, workload: str, concurrency: int, **kw: Any) -> None:
        name = f"{family.name}.{workload}"
        refs: dict[str, str] = {}
        own_refs = kw.pop("refs", None)
        if own_refs is not None:
            refs = own_refs
        else:
            if family.kind == "ours":
                refs["R1"] = f"r1.{workload}"
            if family.second_ref is not None:
                refs["R2"] = f"{family.second_ref}.{workload}"
        scale = family.order_scale * kw.pop("scale", 1.0)
        options = {**family.options, **kw.pop("options", {})}
        default = kw.pop("default", True) and family.default
        specs[name] = ScenarioSpec(
            name=name,
            family=family,
            workload=workload,
            concurrency=concurrency,
            order_scale=scale,
            options=options,
            refs=refs,
            default=default,
            **kw,
        )

    for family in FAMILIES:
        if "throughput" in family.workloads:
            for c in sorted(set(concurrencies)):
                add(family, f"c{c}", c)
        if "latency" in family.workloads:
            ms = round(LATENCY_SECONDS * 1000)
            workload = f"latency{ms}ms.c{top}"
            refs = {"R2": f"r2.{workload}"} if family.name != "r2" else {}
            add(family, workload, top, latency=LATENCY_SECONDS, refs=refs, scale=LATENCY_SCALE)
        if "steps" in family.workloads:
            for n in STEP_COUNTS:
                # The same number of steps (--orders) at every size: fewer jobs for longer workflows.
                workload = f"steps{n}.c{STEPS_CONCURRENCY}"
                refs = {"R1": f"r1.{workload}"} if family.kind == "ours" else {}
                add(family, workload, STEPS_CONCURRENCY, scale=1 / n, options={"steps": n}, refs=refs)
        for flag in ("rss", "rss!"):
            if flag in family.workloads:
                # R1 on the same orders shows what the sandbox's own records weigh.
                add(
                    family,
                    f"rss.c{top}",
                    top,
                    scale=RSS_SCALE / family.order_scale,
                    rss_mark_fraction=1 / RSS_SCALE,
                    refs={"R1": f"r1.rss.c{top}"} if family.kind == "ours" else {},
                    default=flag == "rss",
                    once=True,
                )
    # Drop ratio columns whose reference does not exist for that workload.
    for name, spec in list(specs.items()):
        kept = {label: ref for label, ref in spec.refs.items() if ref in specs}
        if kept != dict(spec.refs):
            specs[name] = replace(spec, refs=kept)
    return specs


def select(
    specs: Mapping[str, ScenarioSpec], only: Iterable[str] | None = None, *, with_refs: bool = True
) -> list[ScenarioSpec]:
    """The scenarios to run: the defaults, or those ``only`` names, plus their references.

    A pattern matches a scenario's full name (``r2.c100``), its family (``r2``: the
    family's default scenarios, or all of them when none is a default) or, as a
    glob, its name (``ours_*.c1``, ``*.steps*``). Raises ValueError naming a pattern
    that matches nothing, with the valid families.
    """
    patterns = [p for p in (only or []) if p]
    if not patterns:
        chosen = [s for s in specs.values() if s.default]
    else:
        chosen = []
        for pattern in patterns:
            family = [s for s in specs.values() if s.family.name == pattern]
            hits = [s for s in family if s.default] or family
            hits += [s for s in specs.values() if s.name == pattern or fnmatch.fnmatchcase(s.name, pattern)]
            if not hits:
                families = sorted({s.family.name for s in specs.values()})
                raise ValueError(
                    f"--only {pattern!r} matches no scenario; families: {families}; "
                    f"names look like {next(iter(specs))!r} (see --list)"
                )
            chosen += [s for s in hits if s not in chosen]
    if with_refs:
        for spec in list(chosen):
            for ref in spec.refs.values():
                if specs[ref] not in chosen:
                    chosen.append(specs[ref])
    return chosen
