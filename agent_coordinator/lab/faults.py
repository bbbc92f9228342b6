"""A seeded fault model: what goes wrong in a run, decided before it runs.

A :class:`FaultPlan` is data: a seed and how much of each kind of fault to inject.
Every decision it makes is a hash of (seed, kind, identity), never a random draw,
so one seed reproduces one *schedule* exactly, however the runs interleave:

* **business failures** -- a share of runs meets a refusal at one step (chosen per
  run); applied by a *saboteur* that knows the domain (the app's
  :class:`~agent_coordinator.lab.hooks.LabHooks`; the flagship's turns an order into one
  its services' own rules refuse), or read by the tools themselves
  (:meth:`FaultPlan.business_failure`);
* **transient failures and latency** on every service -- given to the app's services
  by its lab hooks (``LabHooks.options``: the flagship sets its sandbox scenario's
  ``transient_rate``, ``seed`` and ``latency_ms``), or :meth:`FaultPlan.transient_fault`
  for tools of one's own;
* **model misbehaviour** -- per (run, step) conversation, the model's first answers
  are wrong: an unknown tool, malformed arguments, a wrong value (a wrong amount),
  no tool call, parallel calls (the :func:`agent_coordinator.agents.fake.misbehave` policies), or a
  call of a compensation tool it was never asked for (``unasked_compensation``: a
  refund during the payment step). The guard refuses every one of them; a
  conversation that misbehaves more than ``RunSettings.max_reasks`` times fails
  its step;
* **duplicate delivery** -- every event delivered twice to every group
  (``InMemoryBus(duplicate_delivery=True)``; on a broker, every event published twice);
* **an outage of one participant** (:class:`Outage`) for a while, measured in
  milliseconds or in events logged. Choreography: the participant's consumer group
  has no member during the window (its events wait in the queue), then a member
  subscribes again. Orchestration: there is no participant process to lose, so the
  agent's model is unreachable during the window (every call raises); the step
  runner retries with ``RunSettings.tool_retries``, then the run stops with nothing
  undone (``RunSettings.on_model_unavailable``, ``"stop"`` by default) until it is
  resumed after the window -- or, with ``"compensate"``, the step fails, the
  completed steps are undone (compensations do not involve the model) and the run
  ends ``needs_attention``.

:class:`FaultInjection` applies a plan to one workload through the existing seams
(agents' models, the bus, the event log, the scenario) and counts what it did.
Plans are written as specs: ``seed=7,business=0.2,transient=0.1,latency=2ms,
misbehave=0.25,bad-answers=3,duplicate,outage=payment:300ms@50ms``
(:meth:`FaultPlan.parse`, :meth:`FaultPlan.spec`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import EventLog
from agent_coordinator.core.events import Event
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.lab.buses import DelegatingBus

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from agent_coordinator.bus.base import EventBus, Handler, Subscription
    from agent_coordinator.core.agent import Agent

__all__ = [
    "MISBEHAVIOURS",
    "PRESETS",
    "CountingEventLog",
    "FaultInjection",
    "FaultPlan",
    "FaultSchedule",
    "FaultyBus",
    "InjectionStats",
    "Misbehaviour",
    "Outage",
    "OutageSwitch",
    "RunFaults",
    "Saboteur",
]

#: The ways a model can misbehave. The first five are :data:`agent_coordinator.agents.fake.FAULTS`;
#: ``unasked_compensation`` calls the step's compensation tool (a refund during the
#: payment step) instead of its action.
MISBEHAVIOURS: tuple[str, ...] = (
    "unknown_tool",
    "invalid_arguments",
    "wrong_value",
    "no_tool_call",
    "parallel_calls",
    "unasked_compensation",
)

#: ``saboteur(input, step) -> input``: the input changed so that ``step`` meets a
#: business refusal by the domain's own rules (a declined card, an unshippable
#: address). JSON-mode dicts in and out.
Saboteur = Callable[[Mapping[str, Any], str], dict[str, Any]]

#: Named plans, usable as ``--faults NAME`` (optionally followed by overrides:
#: ``standard,seed=3``).
PRESETS: dict[str, str] = {
    "none": "seed=0",
    "standard": "seed=7,business=0.15,transient=0.1,latency=2ms,misbehave=0.2,bad-answers=3,duplicate",
    "outage": "seed=7,outage=payment:500ms",
}


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) that is a pure function of ``seed`` and ``parts``."""
    text = "|".join([str(seed), *(str(p) for p in parts)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Outage(BaseModel):
    """One participant down for a while.

    The window opens ``start_ms`` after the workload is armed
    (:meth:`FaultInjection.arm`) and closes after ``for_ms`` milliseconds or once
    ``for_events`` new events have been logged since it opened (exactly one of the
    two). ``participant`` is an agent name of the workflow (or, in choreography,
    ``owner`` / ``projection``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    participant: str = Field(min_length=1)
    start_ms: float = Field(default=0.0, ge=0.0)
    for_ms: float | None = Field(default=None, ge=0.0)
    for_events: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_length(self) -> Outage:
        if (self.for_ms is None) == (self.for_events is None):
            raise ValueError("an outage lasts either for_ms milliseconds or for_events events (exactly one)")
        return self

    def spec(self) -> str:
        """``participant:LENGTH[@START]``, e.g. ``payment:300ms@50ms`` or ``payment:40events``."""
        length = f"{self.for_events}events" if self.for_events is not None else f"{_num(self.for_ms or 0.0)}ms"
        start = f"@{_num(self.start_ms)}ms" if self.start_ms else ""
        return f"{self.participant}:{length}{start}"

    @classmethod
    def parse(cls, text: str) -> Outage:
        """Read :meth:`spec`'s form; raises ``ValueError`` saying what is wrong."""
        match = re.fullmatch(r"([^:@\s]+):(\d+(?:\.\d+)?)(ms|s|events?)(?:@(\d+(?:\.\d+)?)(ms|s)?)?", text.strip())
        if match is None:
            raise ValueError(
                f"outage {text!r} must look like PARTICIPANT:LENGTH[@START], "
                "e.g. payment:300ms@50ms or payment:40events"
            )
        participant, amount, unit, start, start_unit = match.groups()
        start_ms = float(start or 0) * (1000.0 if start_unit == "s" else 1.0)
        if unit.startswith("event"):
            return cls(participant=participant, start_ms=start_ms, for_events=int(float(amount)))
        return cls(participant=participant, start_ms=start_ms, for_ms=float(amount) * (1000.0 if unit == "s" else 1.0))


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """How one (run, step) conversation misbehaves: its first ``times`` answers are ``kind``."""

    kind: str
    times: int

    def fails_step(self, max_reasks: int) -> bool:
        """True when the guard runs out of re-asks: the step fails."""
        return self.times > max_reasks


class RunFaults(BaseModel):
    """What the plan holds for one run: the step that meets a business failure, if
    any, and each step whose model misbehaves (``step -> [kind, times]``)."""

    model_config = ConfigDict(frozen=True)

    business: str | None = None
    misbehaviours: dict[str, tuple[str, int]] = Field(default_factory=dict)


class FaultSchedule(BaseModel):
    """A plan materialised for one workload: every per-run decision, listed.

    Equal plans give equal schedules for the same runs (the property "one seed
    reproduces one schedule exactly"); :meth:`describe` prints it.
    """

    model_config = ConfigDict(frozen=True)

    plan: str
    workflow: str
    runs: dict[str, RunFaults]
    transient_rate: float
    latency_ms: float
    duplicate_delivery: bool
    outage: str | None

    def describe(self) -> list[str]:
        """One line per fault, for a report."""
        lines = [f"plan {self.plan}"]
        for run_id, faults in self.runs.items():
            if faults.business:
                lines.append(f"{run_id}: business failure at step {faults.business!r}")
            for step, (kind, times) in faults.misbehaviours.items():
                lines.append(f"{run_id}: model of step {step!r} answers {kind} {times}x")
        if self.transient_rate:
            lines.append(f"every service: {self.transient_rate:.0%} of attempts answered 503 (seeded)")
        if self.latency_ms:
            lines.append(f"every service request: +{_num(self.latency_ms)} ms")
        if self.duplicate_delivery:
            lines.append("every event delivered twice")
        if self.outage:
            lines.append(f"outage {self.outage}")
        return lines


class FaultPlan(BaseModel):
    """A seeded description of what goes wrong; see the module docstring.

    * ``business_rate`` -- share of runs that meet a business failure, at a step
      drawn per run;
    * ``transient_rate`` / ``latency_ms`` -- every service attempt: share answered
      503, and added delay;
    * ``misbehave_rate`` -- share of (run, step) conversations whose model answers
      wrongly first, with a kind from ``misbehaviours`` and 1..``max_bad_answers``
      bad answers;
    * ``duplicate_delivery`` -- every event delivered twice (choreography);
    * ``outage`` -- one participant down for a while.

    Every decision is a pure function of ``seed`` and the identity it is about (run
    id, step, service, idempotency key, attempt).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    business_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    transient_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_ms: float = Field(default=0.0, ge=0.0)
    misbehave_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    misbehaviours: tuple[str, ...] = MISBEHAVIOURS
    max_bad_answers: int = Field(default=1, ge=1)
    duplicate_delivery: bool = False
    outage: Outage | None = None

    @model_validator(mode="after")
    def _known_misbehaviours(self) -> FaultPlan:
        unknown = [k for k in self.misbehaviours if k not in MISBEHAVIOURS]
        if unknown or not self.misbehaviours:
            raise ValueError(f"misbehaviours must be a non-empty subset of {list(MISBEHAVIOURS)}; got {unknown}")
        return self

    # -- specs ---------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """A plan from a spec: comma-separated ``key=value`` items, optionally starting
        with a preset name from :data:`PRESETS`.

        Keys: ``seed``, ``business``, ``transient``, ``latency`` (``5`` or ``5ms``),
        ``misbehave``, ``bad-answers``, ``kinds`` (``unknown_tool+wrong_value``),
        ``duplicate`` (alone, or ``=true/false``), ``outage``
        (``PARTICIPANT:LENGTH[@START]``, see :meth:`Outage.parse`). Raises
        ``ValueError`` naming the item at fault.
        """
        values: dict[str, Any] = {}
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if items and "=" not in items[0] and items[0] in PRESETS:
            items = [i.strip() for i in PRESETS[items[0]].split(",")] + items[1:]
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip().lower().replace("_", "-")
            try:
                if key == "seed":
                    values["seed"] = int(value)
                elif key == "business":
                    values["business_rate"] = float(value)
                elif key == "transient":
                    values["transient_rate"] = float(value)
                elif key == "latency":
                    values["latency_ms"] = float(value.removesuffix("ms"))
                elif key == "misbehave":
                    values["misbehave_rate"] = float(value)
                elif key == "bad-answers":
                    values["max_bad_answers"] = int(value)
                elif key == "kinds":
                    values["misbehaviours"] = tuple(k for k in value.split("+") if k)
                elif key == "duplicate":
                    values["duplicate_delivery"] = not sep or value.lower() in ("1", "true", "yes", "on")
                elif key == "outage":
                    values["outage"] = None if value.lower() in ("", "none") else Outage.parse(value)
                else:
                    raise ValueError(
                        "unknown key; keys: seed, business, transient, latency, misbehave, bad-answers, kinds, "
                        f"duplicate, outage; presets: {', '.join(PRESETS)}"
                    )
            except ValueError as exc:
                raise ValueError(f"fault spec item {item!r}: {exc}") from None
        return cls(**values)

    def spec(self) -> str:
        """The spec :meth:`parse` reads back into an equal plan."""
        parts = [f"seed={self.seed}"]
        if self.business_rate:
            parts.append(f"business={_num(self.business_rate)}")
        if self.transient_rate:
            parts.append(f"transient={_num(self.transient_rate)}")
        if self.latency_ms:
            parts.append(f"latency={_num(self.latency_ms)}ms")
        if self.misbehave_rate:
            parts.append(f"misbehave={_num(self.misbehave_rate)}")
        if self.max_bad_answers != 1:
            parts.append(f"bad-answers={self.max_bad_answers}")
        if self.misbehaviours != MISBEHAVIOURS:
            parts.append(f"kinds={'+'.join(self.misbehaviours)}")
        if self.duplicate_delivery:
            parts.append("duplicate")
        if self.outage is not None:
            parts.append(f"outage={self.outage.spec()}")
        return ",".join(parts)

    # -- the decisions ---------------------------------------------------------------

    def business_failure(self, workflow_id: str, steps: Sequence[str]) -> str | None:
        """The step at which run ``workflow_id`` meets a business failure, or None."""
        if not steps or self.business_rate <= 0.0 or _unit(self.seed, "business", workflow_id) >= self.business_rate:
            return None
        return steps[int(_unit(self.seed, "business-step", workflow_id) * len(steps))]

    def misbehaviour(self, workflow_id: str, step: str) -> Misbehaviour | None:
        """How the model of ``step`` in run ``workflow_id`` misbehaves, or None."""
        if self.misbehave_rate <= 0.0 or _unit(self.seed, "model", workflow_id, step) >= self.misbehave_rate:
            return None
        kinds = self.misbehaviours
        kind = kinds[int(_unit(self.seed, "model-kind", workflow_id, step) * len(kinds))]
        times = 1 + int(_unit(self.seed, "model-times", workflow_id, step) * self.max_bad_answers)
        return Misbehaviour(kind, times)

    def transient_fault(self, service: str, key: str, attempt: int) -> bool:
        """Whether attempt ``attempt`` of the call ``key`` to ``service`` fails
        transiently -- for tools of one's own; the sandbox makes the same kind of
        decision from :meth:`scenario`'s fields."""
        return self.transient_rate > 0.0 and _unit(self.seed, "transient", service, key, attempt) < self.transient_rate

    def schedule(self, workflow: Workflow, workflow_ids: Iterable[str]) -> FaultSchedule:
        """Every decision this plan makes for runs ``workflow_ids`` of ``workflow``."""
        steps = [s.name for s in workflow.steps]
        runs: dict[str, RunFaults] = {}
        for workflow_id in workflow_ids:
            misbehaviours = {
                step: (m.kind, m.times) for step in steps if (m := self.misbehaviour(workflow_id, step)) is not None
            }
            business = self.business_failure(workflow_id, steps)
            if business or misbehaviours:
                runs[workflow_id] = RunFaults(business=business, misbehaviours=misbehaviours)
        return FaultSchedule(
            plan=self.spec(),
            workflow=workflow.name,
            runs=runs,
            transient_rate=self.transient_rate,
            latency_ms=self.latency_ms,
            duplicate_delivery=self.duplicate_delivery,
            outage=self.outage.spec() if self.outage else None,
        )

    def without(
        self, *kinds: Literal["business", "transient", "latency", "misbehave", "duplicate", "outage"]
    ) -> FaultPlan:
        """This plan with the named kinds of fault switched off."""
        off: dict[str, dict[str, Any]] = {
            "business": {"business_rate": 0.0},
            "transient": {"transient_rate": 0.0},
            "latency": {"latency_ms": 0.0},
            "misbehave": {"misbehave_rate": 0.0},
            "duplicate": {"duplicate_delivery": False},
            "outage": {"outage": None},
        }
        update: dict[str, Any] = {}
        for kind in kinds:
            update.update(off[kind])
        return self.model_copy(update=update)


def _num(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- outages


class OutageSwitch:
    """Where one :class:`Outage` stands: ``pending`` -> ``down`` -> ``up``, once.

    :meth:`arm` starts the clock (on the running loop); the window opens after
    ``start_ms`` and closes after ``for_ms`` or after ``for_events`` events counted
    by :meth:`count_events`. Listeners are told of each change (``True``: down).
    Times are recorded relative to arming, in milliseconds.
    """

    def __init__(self, outage: Outage) -> None:
        self.outage = outage
        self.state: Literal["idle", "pending", "down", "up"] = "idle"
        self.down_at_ms: float | None = None
        self.up_at_ms: float | None = None
        self._armed_at: float | None = None
        self._events = 0
        self._listeners: list[Callable[[bool], None]] = []
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def down(self) -> bool:
        """True while the participant is down."""
        return self.state == "down"

    def listen(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(down)`` on every change from now on."""
        self._listeners.append(listener)

    def arm(self) -> None:
        """Start the outage's clock now (idempotent). Needs a running event loop."""
        if self._armed_at is not None:
            return
        loop = asyncio.get_running_loop()
        self._armed_at = loop.time()
        self.state = "pending"
        if self.outage.start_ms <= 0.0:
            self._go_down()
        else:
            self._timers.append(loop.call_later(self.outage.start_ms / 1000.0, self._go_down))

    def count_events(self, n: int) -> None:
        """``n`` new events were logged; an event-length window may close."""
        if self.state == "down" and self.outage.for_events is not None:
            self._events += n
            if self._events >= self.outage.for_events:
                self._go_up()

    def end(self) -> None:
        """Close the window now (the participant comes back), or never open it."""
        self.cancel()
        if self.state == "down":
            self._go_up()
        elif self.state in ("idle", "pending"):
            self.state = "up"

    def cancel(self) -> None:
        """Stop the timers (the state stays as it is)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _elapsed_ms(self) -> float:
        assert self._armed_at is not None
        return (asyncio.get_running_loop().time() - self._armed_at) * 1000.0

    def _go_down(self) -> None:
        if self.state != "pending":
            return
        self.state = "down"
        self.down_at_ms = self._elapsed_ms()
        self._notify(True)
        if self.outage.for_ms is not None:
            self._timers.append(asyncio.get_running_loop().call_later(self.outage.for_ms / 1000.0, self._go_up))
        elif self.outage.for_events == 0:
            self._go_up()

    def _go_up(self) -> None:
        if self.state != "down":
            return
        self.state = "up"
        self.up_at_ms = self._elapsed_ms()
        self._notify(False)

    def _notify(self, down: bool) -> None:
        for listener in list(self._listeners):
            listener(down)


class _OutageMember:
    """A consumer-group member that leaves its group while the outage is on and
    joins again when it is over (the group stays bound, its queue fills)."""

    def __init__(
        self,
        bus: EventBus,
        group: str,
        types: Collection[str],
        handler: Handler,
        concurrency: int,
        switch: OutageSwitch,
    ) -> None:
        self._bus = bus
        self._group = group
        self._types = list(types)
        self._handler = handler
        self._concurrency = concurrency
        self._switch = switch
        self._current: Subscription | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._changes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Subscribing binds the group, so events published while it is down queue up.
        self._current = await self._bus.subscribe(
            self._group, self._types, self._handler, concurrency=self._concurrency
        )
        self._switch.listen(self._on_change)
        self._switch.arm()
        if self._switch.down:
            await self._apply(True)

    def _on_change(self, down: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._apply(down))
        self._changes.add(task)
        task.add_done_callback(self._changes.discard)

    async def _apply(self, down: bool) -> None:
        async with self._lock:
            if self._closed:
                return
            if down and self._current is not None:
                current, self._current = self._current, None
                await current.close()
            elif not down and self._current is None:
                self._current = await self._bus.subscribe(
                    self._group, self._types, self._handler, concurrency=self._concurrency
                )

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            if self._current is not None:
                current, self._current = self._current, None
                await current.close()


class FaultyBus(DelegatingBus):
    """An :class:`~agent_coordinator.bus.base.EventBus` in front of another that takes one consumer
    group down for an :class:`Outage` and, when asked, publishes every event twice
    (duplicate delivery on backends without a switch for it).

    Everything else is the inner bus's: delivery, dead letters, stats (a duplicate
    publish counts as a publish there).
    """

    def __init__(
        self,
        inner: EventBus,
        *,
        outage_group: str | None = None,
        switch: OutageSwitch | None = None,
        publish_twice: bool = False,
    ) -> None:
        if (outage_group is None) != (switch is None):
            raise ValueError("give outage_group and switch together")
        super().__init__(inner)
        self.outage_group = outage_group
        self.switch = switch
        self.publish_twice = publish_twice
        self.duplicates_published = 0

    async def publish(self, event: Event) -> None:
        await self.inner.publish(event)
        if self.publish_twice:
            await self.inner.publish(event)
            self.duplicates_published += 1

    async def subscribe(
        self, group: str, types: Collection[str], handler: Handler, *, concurrency: int = 1
    ) -> Subscription:
        if group != self.outage_group or self.switch is None:
            return await self.inner.subscribe(group, types, handler, concurrency=concurrency)
        member = _OutageMember(self.inner, group, types, handler, concurrency, self.switch)
        await member.start()
        return member

    async def close(self) -> None:
        if self.switch is not None:
            self.switch.cancel()
        await self.inner.close()


class CountingEventLog:
    """An :class:`~agent_coordinator.core.eventlog.EventLog` in front of another that counts
    the distinct events appended (and tells an :class:`OutageSwitch` about them)."""

    def __init__(self, inner: EventLog, *, switch: OutageSwitch | None = None) -> None:
        self.inner = inner
        self.switch = switch
        self._seen: set[str] = set()

    @property
    def count(self) -> int:
        """Distinct events appended so far."""
        return len(self._seen)

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        self.inner.append(events, run_id=run_id)
        new = 0
        for event in events:
            if event.id not in self._seen:
                self._seen.add(event.id)
                new += 1
        if new and self.switch is not None:
            self.switch.count_events(new)

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]:
        return self.inner.events(subject, run_id=run_id)

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------- injection


@dataclass
class InjectionStats:
    """What a :class:`FaultInjection` did.

    * ``model_calls`` -- model calls that reached a wrapped model, per agent
      (re-asks and duplicate handlers included, refused outage calls included);
    * ``misbehaviours`` -- bad answers given, per kind;
    * ``outage_refusals`` -- model calls refused because the agent was down
      (orchestration);
    * ``outage_down_ms`` / ``outage_up_ms`` -- when the window opened and closed,
      relative to arming;
    * ``duplicates_published`` -- extra publishes (broker buses);
    * ``not_applied`` -- faults of the plan this workload could not take, and why.
    """

    model_calls: Counter[str] = field(default_factory=Counter)
    misbehaviours: Counter[str] = field(default_factory=Counter)
    outage_refusals: int = 0
    outage_down_ms: float | None = None
    outage_up_ms: float | None = None
    duplicates_published: int = 0
    not_applied: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model_calls": dict(self.model_calls),
            "misbehaviours": dict(self.misbehaviours),
            "outage_refusals": self.outage_refusals,
            "outage_down_ms": self.outage_down_ms,
            "outage_up_ms": self.outage_up_ms,
            "duplicates_published": self.duplicates_published,
            "not_applied": list(self.not_applied),
        }


_TASK_HEADER = re.compile(r"Workflow `[^`]*`, run `([^`]*)`, step `([^`]*)`")


class FaultInjection:
    """A :class:`FaultPlan` applied to one workload of ``workflow`` in ``mode``.

    Use the pieces it hands out in place of the plain ones::

        injection = FaultInjection(plan, workflow, mode="choreography")
        agents = injection.agents(agents)            # models misbehave / go down
        bus = injection.bus()                        # duplicates, the outage's group
        log = injection.event_log(MemoryEventLog())  # counts events for event-length outages
        inputs = [injection.sabotage(i, saboteur) for i in inputs]  # the app's, see lab.hooks
        injection.arm()                              # the outage clock starts now
        ... run ...
        await injection.aclose()

    Raises :class:`~agent_coordinator.core.errors.CoordinatorError` when the outage names a
    participant the workflow does not have.
    """

    def __init__(self, plan: FaultPlan, workflow: Workflow, *, mode: str) -> None:
        self.plan = plan
        self.workflow = workflow
        self.mode = mode
        self.stats = InjectionStats()
        self.switch: OutageSwitch | None = None
        if plan.outage is not None:
            known = {*workflow.agent_names, "owner", "projection"}
            if plan.outage.participant not in known:
                raise CoordinatorError(
                    f"outage of unknown participant {plan.outage.participant!r}; participants: {sorted(known)}"
                )
            self.switch = OutageSwitch(plan.outage)
            self.switch.listen(self._record_outage)
            if mode == "orchestration" and plan.outage.participant not in workflow.agent_names:
                self.stats.not_applied.append(
                    f"outage of {plan.outage.participant!r}: orchestration has no such participant"
                )
        self._bus: FaultyBus | None = None

    # -- pieces ----------------------------------------------------------------------

    def arm(self) -> None:
        """Start the outage clock now (call it right before the runs start)."""
        if self.switch is not None:
            self.switch.arm()

    def agents(self, agents: Sequence[Agent]) -> list[Agent]:
        """``agents`` whose scripted models misbehave as planned and, in
        orchestration, are unreachable during the outage. Agents whose model is not a
        :class:`~agent_coordinator.agents.fake.ScriptedChatModel` are kept as they are (noted in
        ``stats.not_applied`` when the plan has model faults for them)."""
        from agent_coordinator.agents.fake import ScriptedChatModel

        wrapped: list[Agent] = []
        for agent in agents:
            model = agent.model
            if not isinstance(model, ScriptedChatModel):
                if self.plan.misbehave_rate > 0.0 or self._agent_outage(agent.name):
                    self.stats.not_applied.append(f"model faults of agent {agent.name!r}: not a ScriptedChatModel")
                wrapped.append(agent)
                continue
            policy = self._policy(agent.name, model.policy)
            new_model = ScriptedChatModel(policy=policy, model_name=model.model_name)
            wrapped.append(agent.model_copy(update={"model": new_model}))
        return wrapped

    def bus(self, inner: EventBus | None = None) -> EventBus:
        """The bus for a choreography: ``inner`` (default: a new
        ``InMemoryBus(duplicate_delivery=plan.duplicate_delivery)``) behind a
        :class:`FaultyBus` when there is an outage or duplicates to add. The caller
        closes it."""
        if inner is None:
            from agent_coordinator.bus.memory import InMemoryBus

            inner = InMemoryBus(duplicate_delivery=self.plan.duplicate_delivery)
            publish_twice = False
        else:
            publish_twice = self.plan.duplicate_delivery and not getattr(inner, "duplicate_delivery", False)
        group = f"{self.workflow.name}.{self.plan.outage.participant}" if self.plan.outage is not None else None
        if group is None and not publish_twice:
            return inner
        self._bus = FaultyBus(inner, outage_group=group, switch=self.switch, publish_twice=publish_twice)
        return self._bus

    def event_log(self, inner: EventLog) -> CountingEventLog:
        """``inner`` behind a :class:`CountingEventLog` that drives event-length outages."""
        return CountingEventLog(inner, switch=self.switch)

    def sabotage(self, input: Mapping[str, Any], saboteur: Saboteur | None) -> dict[str, Any]:
        """``input`` (JSON-mode) as the plan's business failure for its run wants it:
        unchanged, or changed by ``saboteur`` so its chosen step is refused. Without a
        saboteur a planned business failure cannot be applied (noted in
        ``stats.not_applied``)."""
        workflow_id = str(input[self.workflow.id_field])
        step = self.plan.business_failure(workflow_id, [s.name for s in self.workflow.steps])
        if step is None:
            return dict(input)
        if saboteur is None:
            self.stats.not_applied.append(f"{workflow_id}: business failure at {step!r} (no saboteur)")
            return dict(input)
        return saboteur(input, step)

    def end_outage(self) -> None:
        """Bring the participant back now if it is still down (e.g. once the runs
        have ended, so it handles what queued up while it was away)."""
        if self.switch is not None:
            self.switch.end()

    async def outage_over(self, *, at_most: float) -> None:
        """Wait until the outage's window closes by itself, at most ``at_most``
        seconds (an event-length window may never close once nothing happens): what
        an operator waits for before resuming runs a model outage stopped."""
        switch = self.switch
        if switch is None or switch.state == "up":
            return
        closed = asyncio.Event()
        switch.listen(lambda down: None if down else closed.set())
        try:
            await asyncio.wait_for(closed.wait(), at_most)
        except TimeoutError:
            return

    async def aclose(self) -> None:
        """Stop the outage timers and record the final counts."""
        if self.switch is not None:
            self.switch.cancel()
        if self._bus is not None:
            self.stats.duplicates_published = self._bus.duplicates_published

    # -- internals -------------------------------------------------------------------

    def _agent_outage(self, agent: str) -> bool:
        return self.mode == "orchestration" and self.plan.outage is not None and self.plan.outage.participant == agent

    def _record_outage(self, down: bool) -> None:
        assert self.switch is not None
        if down:
            self.stats.outage_down_ms = self.switch.down_at_ms
        else:
            self.stats.outage_up_ms = self.switch.up_at_ms

    def _policy(
        self, agent: str, inner: Callable[[Sequence[BaseMessage], Sequence[dict[str, Any]]], AIMessage]
    ) -> Callable[[Sequence[BaseMessage], Sequence[dict[str, Any]]], AIMessage]:
        from langchain_core.messages import AIMessage, HumanMessage

        from agent_coordinator.agents.fake import misbehave

        plan, stats, switch = self.plan, self.stats, self.switch
        outage_here = self._agent_outage(agent)
        workflow = self.workflow

        def policy(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> AIMessage:
            stats.model_calls[agent] += 1
            if outage_here and switch is not None:
                switch.arm()
                if switch.down:
                    stats.outage_refusals += 1
                    raise ConnectionError(f"agent {agent!r} is unreachable (injected outage)")
            where = None
            for message in reversed(messages):
                if isinstance(message, HumanMessage) and (match := _TASK_HEADER.search(message.text)):
                    where = match.groups()
                    break
            if where is not None:
                wrong = plan.misbehaviour(where[0], where[1])
                answered = sum(1 for m in messages if isinstance(m, AIMessage))
                if wrong is not None and answered < wrong.times:
                    stats.misbehaviours[wrong.kind] += 1
                    if wrong.kind == "unasked_compensation":
                        return _unasked_compensation(workflow, where[1], messages)
                    return misbehave(wrong.kind, times=wrong.times)(messages, tools)
            return inner(messages, tools)

        policy.__name__ = policy.__qualname__ = f"faults({plan.spec()}, then={getattr(inner, '__name__', inner)})"
        return policy


def _unasked_compensation(workflow: Workflow, step_name: str, messages: Sequence[BaseMessage]) -> AIMessage:
    """An answer calling a compensation tool nobody asked for: the step's own undo
    (a refund while charging), else the first undo of the workflow."""
    from langchain_core.messages import AIMessage
    from langchain_core.messages.tool import tool_call

    from agent_coordinator.core.task import parse_task

    step = next((s for s in workflow.steps if s.name == step_name), None)
    name = (step.compensation if step is not None else None) or next(
        (s.compensation for s in workflow.steps if s.compensation), "refund"
    )
    arguments: dict[str, Any] = {}
    for message in reversed(messages):
        task = parse_task(message.text) if message.type == "human" else None
        if task is not None:
            arguments = dict(task.arguments)
            break
    return AIMessage(content="", tool_calls=[tool_call(name=name, args=arguments, id=None)])
