"""Choreography: a workflow compiled into per-participant event subscriptions.

There is no coordinator. :func:`subscription_tables` splits the saga's rules
(:meth:`agent_coordinator.core.saga.Saga.triggers`) by owner, so each participant learns only
the event types that concern it and what to do on each:

* an **agent** performs its step on its trigger event (``OrderPlaced`` for the first
  step, the previous step's success event for the others) and emits its success or
  failure event; on the *next* step's failure, compensation or failed-compensation
  event it undoes its own step (from the result carried in the event) and emits its
  compensated event -- so compensation runs in reverse order, by events alone;
* the workflow's **owner** emits the completed event after the last step's success,
  and the cancelled event once the first step has been undone (or has failed);
* the **projection** (:class:`StatusProjection`) only listens: it collects each
  run's events and records its final status. It decides nothing.

Each participant subscribes under its own consumer group (``<workflow>.<name>``),
so several copies of one participant compete for its events, and a new reaction
(a notification agent on ``ShipmentScheduled``) joins by subscribing under a new
group without touching anything else.

Delivery is at-least-once. A redelivered event is a no-op thanks to the inbox (a
participant remembers the event ids it handled) and, below it, to the idempotency
keys every tool call carries; emitted events have deterministic ids, so a repeated
emission is recognised downstream too.

Nothing is acted on unchecked. With ``keys`` (a :class:`~agent_coordinator.core.signing.Keyring`)
every event a participant emits is signed by it, and every participant -- the
projection included -- refuses an event that is not signed by an emitter allowed to
emit its type (:meth:`~agent_coordinator.core.saga.Saga.emitters`), raising
:class:`~agent_coordinator.core.errors.UntrustedEvent`; an agent or the owner also refuses an
event that lacks data its type requires (:meth:`~agent_coordinator.core.saga.Saga.check_event`),
raising :class:`~agent_coordinator.core.errors.MalformedEvent`. Either way the bus dead-letters
the event at once with the reason, and nothing happens to the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from agent_coordinator.bus.base import EventBus, Handler, Subscription
from agent_coordinator.bus.memory import InMemoryBus
from agent_coordinator.bus.outbox import Deadlines, MemoryDeadlines, OutboxRelay, ParticipantStore
from agent_coordinator.core import telemetry
from agent_coordinator.core.errors import BusClosed, BusError, CoordinatorError, UntrustedEvent
from agent_coordinator.core.eventlog import EventLog, MemoryEventLog, causal_order
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import OWNER, Action, NextAction, Saga, StepReport
from agent_coordinator.core.signing import Keyring

__all__ = [
    "OWNER",
    "PROJECTION",
    "Choreographer",
    "Choreography",
    "Inbox",
    "StatusProjection",
    "subscription_tables",
]

log = logging.getLogger(__name__)

PROJECTION = "projection"


def subscription_tables(saga: Saga) -> dict[str, dict[str, NextAction]]:
    """participant name -> {event type -> what that participant does on it}.

    Agents are named by the workflow's steps; ``owner`` ends runs. The projection
    is not listed: it reacts to nothing, it only records.
    """
    tables: dict[str, dict[str, NextAction]] = {}
    for event_type, nxt in saga.triggers().items():
        owner = nxt.step.agent if nxt.step is not None else OWNER
        tables.setdefault(owner, {})[event_type] = nxt
    return tables


class Inbox:
    """Event ids a consumer group has handled, so a redelivery is a no-op.

    In memory and bounded (the oldest ids are forgotten first): it only has to cover
    the window in which a redelivery arrives, and must not grow with the number of
    runs a long-lived process handles. A durable inbox is :mod:`agent_coordinator.bus.outbox`.
    """

    def __init__(self, *, capacity: int = 8_192) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def add(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


class StatusProjection:
    """Sees every event go by and wakes whoever waits for a run to end or pause.

    Not a coordinator, and not a store: a run's result is read from the event log
    (every event is logged before it is published, so the log holds a run's whole
    chain by the time its end can be seen), never from what arrived here, in
    whatever order the bus delivered it. ``status`` keeps the latest status of the
    runs it saw end or pause (the most recent ``capacity`` of them).
    """

    def __init__(self, saga: Saga, *, capacity: int = 8_192) -> None:
        self.saga = saga
        self.status: OrderedDict[str, str] = OrderedDict()
        self.capacity = capacity
        self._waiters: dict[str, asyncio.Future[Event]] = {}

    def expect(self, workflow_id: str) -> asyncio.Future[Event]:
        """A future that resolves to the next terminal or pause event of ``workflow_id``."""
        waiter = self._waiters.get(workflow_id)
        if waiter is None or waiter.done():
            waiter = self._waiters[workflow_id] = asyncio.get_running_loop().create_future()
        return waiter

    def forget(self, workflow_id: str) -> None:
        self._waiters.pop(workflow_id, None)

    async def record(self, event: Event) -> None:
        if self.saga.is_terminal(event.type):
            status = str(event.data.get("status", "completed"))
        elif self.saga.is_pause(event.type):
            status = "awaiting_approval"
        elif self.saga.is_stop(event.type):
            status = "failed"  # stopped by a model outage, until resumed
        else:
            return
        self.status[event.subject] = status
        self.status.move_to_end(event.subject)
        if len(self.status) > self.capacity:
            self.status.popitem(last=False)
        waiter = self._waiters.pop(event.subject, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)


class Choreographer:
    """Runs workflows as a choreography of participants on an event bus.

    * ``participants`` -- which participants this process hosts (default: all,
      in-process); each subscribes under its consumer group with ``concurrency``
      concurrent handlers;
    * ``store`` -- a :class:`~agent_coordinator.bus.outbox.ParticipantStore`: with it, a handler
      commits "trigger handled" and its emitted event in one local transaction and
      a relay publishes the event (outbox + inbox, see :mod:`agent_coordinator.bus.outbox`); without
      it, a bounded in-memory inbox and a direct publish (one process, tests);
    * ``deadline`` -- seconds a run may go without ending. The owner then fails
      whatever step the run is stuck in, so the completed steps compensate
      themselves by events, instead of the run stalling silently behind a dead
      participant; a run still stuck a ``deadline`` later is failed one step further.
      Deadlines live in the participant store when there is one, so any process
      hosting the owner on that store takes over those of an owner that died;
    * ``run_timeout`` -- how long :meth:`run` waits for a run to end or pause;
    * ``broker_wait`` -- how long :meth:`start` waits for a broker that is down;
    * ``keys`` -- the :class:`~agent_coordinator.core.signing.Keyring` that signs what this
      process's participants emit and checks who emitted what they receive; it must
      be the signer of ``saga.factory``. Without keys events are neither signed nor
      checked: fine on an in-memory bus, which nothing outside the process can reach;
      on a broker anyone who may publish there could start and steer runs, so a
      warning is logged (the CLI always gives keys on a broker).

    The event log doubles as the shared record of what happened: a participant
    does nothing for a trigger that already has a consequence in the log (handled
    before a crash, or failed by the deadline while the participant was down).
    """

    mode = "choreography"

    def __init__(
        self,
        runner: StepRunner,
        saga: Saga,
        *,
        bus: EventBus,
        event_log: EventLog | None = None,
        run_id: str = "run",
        participants: Collection[str] | None = None,
        concurrency: int = 16,
        run_timeout: float = 300.0,
        store: ParticipantStore | None = None,
        deadline: float | None = None,
        broker_wait: float = 120.0,
        keys: Keyring | None = None,
    ) -> None:
        if keys is not None and saga.factory.signer is not keys:
            raise CoordinatorError(
                "the saga's EventFactory must sign with the keys the choreography checks with:"
                " build it as EventFactory(..., signer=keys)"
            )
        self.runner = runner
        self.saga = saga
        self.bus = bus
        self.event_log: EventLog = event_log if event_log is not None else MemoryEventLog()
        self.run_id = run_id
        self.tables = subscription_tables(saga)
        known = {*self.tables, PROJECTION}
        chosen = set(known if participants is None else participants)
        unknown = chosen - known
        if unknown:
            raise CoordinatorError(f"unknown participants {sorted(unknown)}; choose from {sorted(known)}")
        self.participants = chosen
        self.concurrency = concurrency
        self.run_timeout = run_timeout
        self.store = store
        self.relay = OutboxRelay(store, bus) if store is not None else None
        self.deadline = deadline
        self.broker_wait = broker_wait
        self.deadlines: Deadlines = store if store is not None else MemoryDeadlines()
        self.keys = keys
        self.projection = StatusProjection(saga)
        self._subscriptions: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._started = False

    def group(self, participant: str) -> str:
        """The consumer group a participant subscribes under."""
        return f"{self.runner.workflow.name}.{participant}"

    async def start(self) -> None:
        """Subscribe every hosted participant and start the outbox relay. Idempotent,
        and safe to call from concurrent runs (they wait for one start)."""
        async with self._starting:
            if not self._started:
                await self._start()
                self._started = True

    async def _start(self) -> None:
        if self.keys is not None:
            # Fail now, not at the first event, when a hosted participant has no key.
            for participant in self.participants - {PROJECTION}:
                self.keys.ensure_signer(participant)
        elif not isinstance(self.bus, InMemoryBus):
            log.warning(
                "events on %s are neither signed nor checked: whoever can publish to that broker can start"
                " and steer runs; pass keys=Keyring.open(...) (the coordinator CLI does)",
                type(self.bus).__name__,
            )
        if self.relay is not None:
            self.relay.start()  # also publishes what a crashed process left in the outbox
        for participant, table in self.tables.items():
            if participant in self.participants:
                handler = self._handler(self.group(participant), table)
                self._subscriptions.append(
                    await self._subscribe(self.group(participant), list(table), handler, concurrency=self.concurrency)
                )
        if PROJECTION in self.participants:
            self._subscriptions.append(
                await self._subscribe(self.group(PROJECTION), self.saga.event_types, self._projection_handler())
            )
        if self.deadline is not None and OWNER in self.participants:
            self._sweeper = asyncio.create_task(self._sweep_deadlines(self.deadline), name="deadline sweeper")

    async def _subscribe(self, group: str, types: list[str], handler: Any, *, concurrency: int = 1) -> Subscription:
        """Subscribe, waiting up to ``broker_wait`` seconds for a broker that is down
        (restarting, or not up yet): a participant started during an outage waits for
        the broker rather than exit, and the bus reconnects by itself once subscribed."""
        delay, waited = 0.25, 0.0
        while True:
            try:
                return await self.bus.subscribe(group, types, handler, concurrency=concurrency)
            except BusClosed:
                raise
            except BusError as exc:
                if waited >= self.broker_wait:
                    raise
                if not waited:
                    log.warning("waiting up to %gs for the broker: %s", self.broker_wait, exc)
                await asyncio.sleep(delay)  # backoff between attempts, bounded by broker_wait
                waited += delay
                delay = min(delay * 2, 5.0)

    async def publish(self, event: Event, *, run_id: str | None = None) -> None:
        """Log then announce: the log is the record, the bus is the delivery.

        Only a start event names its run; the others join their cause's run.
        """
        self.event_log.append([event], run_id=run_id)
        await self._announce(event)

    async def _announce(self, event: Event) -> None:
        """Put ``event`` on the bus: through the outbox when there is a store (a broker
        that is down delays it; the relay publishes it once the broker is back),
        straight to the bus otherwise."""
        if self.store is None:
            await self.bus.publish(event)
            return
        await self.store.enqueue([event])
        assert self.relay is not None
        self.relay.wake()

    def _consequence(self, trigger: Event, *, besides: str | None = None) -> Event | None:
        """An event already in the log that ``trigger`` caused (other than ``besides``)."""
        for logged in self.event_log.events(trigger.subject):
            if logged.causation_id == trigger.id and logged.id != besides:
                return logged
        return None

    def _authenticate(self, event: Event) -> None:
        """Refuse ``event`` (UntrustedEvent) unless it is signed by a key of the registry
        whose owner may emit its type. A no-op without keys."""
        if self.keys is None:
            return
        signer = self.keys.verify(event)
        allowed = self.saga.emitters(event.type)
        if signer not in allowed:
            raise UntrustedEvent(
                f"{event.type} {event.id} of {event.subject!r} is signed by {signer!r} (key {event.signingkey!r}),"
                f" but only {' or '.join(map(repr, sorted(allowed))) or 'nobody'} may emit {event.type}"
                f" in workflow {self.saga.workflow.name!r}"
            )

    def _projection_handler(self) -> Handler:
        async def record(event: Event) -> None:
            self._authenticate(event)  # a forged terminal event must not wake anyone
            await self.projection.record(event)

        return record if self.keys is not None else self.projection.record

    def _handler(self, group: str, table: Mapping[str, NextAction]) -> Any:
        inbox = Inbox()
        in_hand: set[str] = set()
        store = self.store

        async def handle(event: Event) -> None:
            # Before anything else, the inbox included: an event we must not act on is
            # dead-lettered with the reason (MalformedEvent), not retried or absorbed.
            self._authenticate(event)
            self.saga.check_event(event)
            if event.id in inbox or event.id in in_hand:
                # Handled, or being handled right now by this process: a duplicate
                # delivery. (If the copy in hand fails, the bus redelivers it.)
                return
            in_hand.add(event.id)
            began = time.perf_counter()
            try:
                # A child of the event's own span: one order is one trace, across processes.
                with telemetry.span(
                    f"process {event.type}",
                    kind=telemetry.SpanKind.CONSUMER,
                    parent=event,
                    attributes={
                        "messaging.operation.type": "process",
                        "messaging.destination.name": group,
                        "messaging.message.id": event.id,
                        "coordinator.workflow_id": event.subject,
                    },
                ):
                    emitted = await handle_once(event)
            finally:
                in_hand.discard(event.id)
            if not log.isEnabledFor(logging.INFO):
                return  # the line's fields are built for nothing on this hot path otherwise
            nxt = table[event.type]
            log.info(
                "%s handled %s of %s: %s",
                group,
                event.type,
                event.subject,
                emitted.type if emitted is not None else "nothing to emit",
                extra={
                    "workflow_id": event.subject,
                    "event": event.type,
                    "participant": group,
                    "step": nxt.step.name if nxt.step is not None else None,
                    "outcome": emitted.type if emitted is not None else None,
                    "duration_ms": round(_ms(began), 1),
                },
            )

        async def handle_once(event: Event) -> Event | None:
            """Act on ``event`` once; the event emitted (or announced again), if any."""
            if store is not None and await store.handled(group, event.id):
                inbox.add(event.id)
                return None
            # A consequence already in the log (our own before a crash, a concurrent
            # duplicate's, or the deadline's failure of this step) is announced again
            # instead of acting again: its id is deterministic, so downstream it is a
            # duplicate, and announcing it again covers a crash before it was relayed.
            nxt = table[event.type]
            emitted = self._consequence(event)
            if emitted is not None:
                await self._undo_abandoned(group, nxt, event, emitted)
            else:
                if store is not None and nxt.action is Action.PERFORM:
                    await store.note_attempt(group, event.id)  # before any effect: see _undo_abandoned
                emitted = await self._react(nxt, event)
            if emitted is not None:
                self.event_log.append([emitted])
                if store is None:
                    await self.bus.publish(emitted)
                else:
                    await store.commit(group, event.id, [emitted])
                    assert self.relay is not None
                    self.relay.wake()
            inbox.add(event.id)
            return emitted

        return handle

    async def _undo_abandoned(self, group: str, nxt: NextAction, trigger: Event, consequence: Event) -> None:
        """A member of ``group`` began this step on ``trigger`` and died before its
        commit; the run's deadline failed the step meanwhile, so the saga has moved on
        and will never undo whatever the dead member's call did. Undo it here (the
        attempt journal says there was one; idempotency keys make the undo exact)."""
        step = nxt.step
        if (
            self.store is None
            or nxt.action is not Action.PERFORM
            or step is None
            or consequence.type != step.events.failed
            or (consequence.data.get("failure") or {}).get("by") != OWNER  # the agent's own failure: it did nothing
            or not await self.store.attempted(group, trigger.id)
        ):
            return
        report = await self.runner.undo_abandoned(
            step, workflow_id=trigger.subject, input=trigger.data["input"], results=trigger.data["results"]
        )
        if not report.ok:
            log.error("run %s: %s; a person must look", trigger.subject, report.reason)
        elif report.result is not None:
            log.warning("undid an abandoned %s of %s after its deadline failed the step", step.action, trigger.subject)

    async def _react(self, nxt: NextAction, event: Event) -> Event | None:
        """What this participant does on ``event``; None when it must emit nothing."""
        data = event.data
        if nxt.action is Action.PERFORM:
            assert nxt.step is not None
            parameters = self.runner.settings.parameters
            reason = self.saga.approval_reason(nxt.step, cause=event, parameters=parameters)
            if reason is not None:
                # Pause: the step runs when someone publishes its Approved event.
                requested = self.saga.approval_requested(nxt.step, reason, cause=event)
                return requested if await self._answer_holds(event, requested) else None
            report = await self.runner.perform(
                nxt.step, workflow_id=event.subject, input=data["input"], results=data["results"]
            )
            emitted = self.saga.performed(nxt.step, report, cause=event)
            lost = not await self._answer_holds(event, emitted)
            if report.stopped and lost:
                # Our model was out and the deadline failed the step meanwhile: the run
                # is being unwound already, and a stop beside it would fork the chain.
                return None
            if report.ok and lost:
                # The run's deadline failed this step while we were acting: undo our
                # effect at once and say nothing; the run is already being unwound.
                assert report.result is not None
                await self.runner.compensate(nxt.step, workflow_id=event.subject, result=report.result)
                return None
            return None if lost else emitted
        if nxt.action is Action.COMPENSATE:
            assert nxt.step is not None
            report = await self.runner.compensate(
                nxt.step, workflow_id=event.subject, result=data["results"][nxt.step.name]
            )
            emitted = self.saga.compensated(nxt.step, report, cause=event)
            if not await self._answer_holds(event, emitted):
                # The deadline declared this undo failed while we were doing it, and the
                # run has moved on: a second, competing event would fork the chain.
                log.warning("undo of %s for %s finished after its deadline", nxt.step.name, event.subject)
                return None
            return emitted
        finished = self.saga.finished(cause=event)
        return finished if await self._answer_holds(event, finished) else None

    async def _answer_holds(self, trigger: Event, answer: Event) -> bool:
        """Whether ``answer`` is the one answer to ``trigger``: no other is in the log,
        and -- with a store shared by processes -- the store's claim of the trigger's
        outcome went to it. Checking the log alone left a window between processes:
        an agent's late answer and the owner's deadline failure of the same step both
        went out and forked the chain (seen by the torture harness on RabbitMQ)."""
        if self.store is None:
            # One process: nothing runs between this check and the caller's append.
            return self._consequence(trigger, besides=answer.id) is None
        # The claim decides between processes; an answer logged before the trigger was
        # taken in hand was already found by the handler's own look at the log.
        return await self.store.claim_outcome(trigger.id, answer.id) == answer.id

    # -- deadlines -------------------------------------------------------------------

    async def _watch(self, workflow_id: str, *, fresh: bool = False) -> None:
        """Give ``workflow_id`` its deadline (a ``fresh`` one replaces any it had)."""
        if self.deadline is not None:
            await self.deadlines.arm_deadline(workflow_id, time.time() + self.deadline, replace=fresh)

    async def _unwatch(self, workflow_id: str, result: WorkflowResult) -> WorkflowResult:
        # A run that ended, waits for a person or was stopped by a model outage is
        # nobody's to fail: a stopped run waits for `resume`, which re-arms it.
        stopped = bool(result.events) and self.saga.is_stop(result.events[-1].type)
        if self.deadline is not None and (
            result.status.ended or result.status is WorkflowStatus.AWAITING_APPROVAL or stopped
        ):
            await self.deadlines.disarm_deadline(workflow_id)
        return result

    async def _sweep_deadlines(self, deadline: float) -> None:
        """The owner's timer: fail the runs whose deadline passed, wherever they were
        started (deadlines in a shared store are every owner's)."""
        interval = min(1.0, max(0.02, deadline / 10))
        while True:
            await asyncio.sleep(interval)  # a timer's tick, not a wait for a condition
            try:
                now = time.time()
                for workflow_id in await self.deadlines.claim_due_deadlines(now, extend_to=now + deadline):
                    if await self.expire(workflow_id) is None:
                        await self.deadlines.disarm_deadline(workflow_id)  # ended, or waits for a person
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store or broker hiccup: the deadlines stay due
                log.warning("deadline sweep failed (retrying): %s", exc)

    async def expire(self, workflow_id: str) -> Event | None:
        """Move ``workflow_id`` on, as its deadline passed.

        A run stuck before a step's answer: emits, caused by the run's latest event,
        that step's failure (or the owner's own terminal event), so the completed
        steps compensate themselves by events as for any failure. A run stuck before
        an undo is *not* failed: the undo is the only way forward and its agent may
        only be down, and an undo declared failed would leave its effect held (a
        ``needs_attention`` run nobody needed), so the undo's trigger is announced
        again (in case it was lost) and the run waits another ``deadline`` -- its
        agent's inbox makes the announcement free if it is merely busy. Returns the
        event emitted or announced; None when the run had ended or waits for a person.
        """
        known = self.event_log.events(workflow_id)
        if not known:
            return None
        last = known[-1]
        nxt = self.saga.next_action(last.type)
        if nxt is None or self.saga.is_pause(last.type):
            return None
        reason = f"no answer within the run's deadline of {self.deadline:g}s"
        # The owner speaks for the silent agent, and signs as itself: the saga lets the
        # owner emit a step's failure (emitters), and the agent's key is not here.
        if nxt.action is Action.PERFORM:
            assert nxt.step is not None
            reason = f"agent {nxt.step.agent!r} gave {reason}"
            emitted = self.saga.performed(nxt.step, StepReport(ok=False, reason=reason), cause=last, signed_by=OWNER)
        elif nxt.action is Action.COMPENSATE:
            assert nxt.step is not None
            log.warning(
                "run %s: still waiting for agent %r to undo step %r; announcing %s again",
                workflow_id,
                nxt.step.agent,
                nxt.step.name,
                last.type,
            )
            await self._announce(last)
            return last
        else:
            emitted = self.saga.finished(cause=last)
        if not await self._answer_holds(last, emitted):
            # The agent answered first (its answer may not be logged yet, if it died
            # right after claiming): announce the trigger again so that it, or another
            # member, delivers that answer; the run waits another deadline.
            await self._announce(last)
            return last
        log.warning("run %s missed its deadline at %s: emitting %s", workflow_id, last.type, emitted.type)
        await self.publish(emitted)
        return emitted

    async def run(self, input: BaseModel) -> WorkflowResult:
        """Publish ``input``'s started event and wait for the projection to see it end."""
        await self.start()
        started = time.perf_counter()
        workflow_id = self.runner.workflow.workflow_id(input)
        await self._watch(workflow_id)
        # The run's span, in the caller's trace: the start event carries it, so every
        # participant's span of this order descends from it, in whichever process.
        with telemetry.span(
            f"run {self.runner.workflow.name}",
            attributes={"coordinator.workflow_id": workflow_id, "coordinator.mode": self.mode},
        ):
            await self.publish(self.saga.started(workflow_id, input.model_dump(mode="json")), run_id=self.run_id)
            events = await self._wait(workflow_id)
        return await self._unwatch(
            workflow_id, self.saga.result(workflow_id, events, mode=self.mode, duration_ms=_ms(started))
        )

    async def resume(self, workflow_id: str) -> WorkflowResult:
        """Carry on a run that is not over, until it ends or pauses.

        Nobody holds a choreographed run's state, and whoever was to act next may have
        lost its event (an in-memory bus dies with its process; a participant may have
        crashed before it acted). So the run's latest logged event is announced again:
        its id is the same, so a participant that handled it already ignores it (its
        inbox, the record of its consequence) and one that did not acts on it, with
        the same idempotency keys. A run stopped by a model outage (its latest event
        is a ``<Step>Stopped``) is carried on by publishing its ``<Step>Resumed``, on
        which the step's agent performs the step again. The run gets a fresh
        deadline. Raises CoordinatorError when nothing is known of ``workflow_id``.
        """
        await self.start()
        known = self.event_log.events(workflow_id)
        if not known:
            raise CoordinatorError(f"no run of {workflow_id!r} to resume: the event log has no events for it")
        last = known[-1]
        if self.saga.is_terminal(last.type) or self.saga.is_pause(last.type):
            return self.saga.result(workflow_id, known, mode=self.mode)
        started = time.perf_counter()
        await self._watch(workflow_id, fresh=True)
        if self.saga.is_stop(last.type):
            await self.publish(self.saga.resumed(cause=last))
        else:
            await self._announce(last)
        events = await self._wait(workflow_id, after=last.id)
        result = self.saga.result(workflow_id, events, mode=self.mode, duration_ms=_ms(started))
        return await self._unwatch(workflow_id, result)

    async def decide(self, workflow_id: str, decision: Mapping[str, Any]) -> WorkflowResult:
        """Publish a person's decision on ``workflow_id``'s pending approval and wait
        for the run to end (or pause again)."""
        await self.start()
        known = self.event_log.events(workflow_id)
        if not known or not self.saga.is_pause(known[-1].type):
            raise CoordinatorError(f"{workflow_id!r} is not waiting for an approval; see `coordinator status`")
        requested = known[-1]
        step = self.runner.workflow.step(requested.data["step"])
        started = time.perf_counter()
        decided = self.saga.approval_decided(
            step,
            approved=bool(decision.get("approved")),
            by=str(decision.get("by") or "someone"),
            note=str(decision.get("note") or ""),
            cause=requested,
        )
        await self._watch(workflow_id, fresh=True)
        await self.publish(decided)
        events = await self._wait(workflow_id, after=requested.id)
        result = self.saga.result(workflow_id, events, mode=self.mode, duration_ms=_ms(started))
        return await self._unwatch(workflow_id, result)

    def _settled(self, workflow_id: str, after: str | None) -> list[Event] | None:
        """The run's logged events once it ended, paused or stopped (at an event other
        than ``after``, the pause or stop being answered), else None."""
        logged = self.event_log.events(workflow_id)
        if logged:
            last = logged[-1]
            halted = self.saga.is_pause(last.type) or self.saga.is_stop(last.type)
            if self.saga.is_terminal(last.type) or (halted and last.id != after):
                return logged
        return None

    async def _wait(self, workflow_id: str, *, after: str | None = None) -> list[Event]:
        """The run's whole chain, from the event log, once it ended or paused.

        The projection (or, when it runs in another process, a poll of the shared
        log) only says when to look: the events come from the log, so a result
        lacks nothing that arrived late or out of order.
        """
        try:
            async with asyncio.timeout(self.run_timeout):
                if PROJECTION not in self.participants:
                    return await self._follow_log(workflow_id, after)
                while True:
                    waiter = self.projection.expect(workflow_id)  # before looking: no lost wake-up
                    settled = self._settled(workflow_id, after)
                    if settled is not None:
                        self.projection.forget(workflow_id)
                        return [e for _, e in causal_order(settled)]
                    await waiter
        except TimeoutError:
            self.projection.forget(workflow_id)
            logged = self.event_log.events(workflow_id)
            raise CoordinatorError(
                f"run {workflow_id!r} did not end within {self.run_timeout:g}s; its last event was "
                f"{logged[-1].type if logged else 'none'}; a participant may be down or its event dead-lettered "
                "(see the bus's dead letters)"
            ) from None

    async def _follow_log(self, workflow_id: str, after: str | None) -> list[Event]:
        """The run's events once the shared event log shows it ended or paused."""
        delay = 0.005
        while (settled := self._settled(workflow_id, after)) is None:
            await asyncio.sleep(delay)  # polling another process's writes, bounded by run_timeout
            delay = min(delay * 2, 0.1)
        return [e for _, e in causal_order(settled)]

    async def aclose(self) -> None:
        """Unsubscribe this process's participants, publish what the outbox holds,
        stop the deadline sweeper (the bus and the store are closed by their owners;
        deadlines kept in a store stay for the next owner)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        self._started = False
        if self.relay is not None:
            await self.relay.close()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class Choreography:
    """Choreography mode: participants react to domain events on a bus; nobody holds
    the whole flow (a :class:`~agent_coordinator.core.run.Mode`).

    * ``bus`` -- an :class:`~agent_coordinator.bus.base.EventBus`; default: a fresh
      in-memory bus, closed on exit (:func:`agent_coordinator.bus.open_bus` opens
      RabbitMQ and NATS ones by URL);
    * ``participants`` -- the participants this process hosts (default: all);
    * ``store`` -- their outbox, inbox and deadlines
      (:class:`~agent_coordinator.bus.outbox.ParticipantStore`); required on a
      broker for nothing to be lost, optional in memory;
    * ``deadline`` -- seconds a run may go without ending before its owner fails the
      step it is stuck in; ``concurrency`` -- handlers per participant;
      ``broker_wait`` -- how long a start waits for a broker that is down.
    """

    bus: EventBus | None = None
    participants: Collection[str] | None = None
    store: ParticipantStore | None = None
    deadline: float | None = None
    concurrency: int = 16
    broker_wait: float = 120.0
    name: ClassVar[str] = "choreography"

    @asynccontextmanager
    async def open(
        self, runner: StepRunner, saga: Saga, *, event_log: EventLog, run_id: str, keys: Keyring | None
    ) -> AsyncIterator[Choreographer]:
        """The :class:`Choreographer` of ``runner``'s workflow, its participants
        subscribed; on exit they unsubscribe (and a bus made here is closed)."""
        own_bus = self.bus is None
        bus = InMemoryBus() if self.bus is None else self.bus
        engine = Choreographer(
            runner,
            saga,
            bus=bus,
            event_log=event_log,
            run_id=run_id,
            concurrency=self.concurrency,
            participants=self.participants,
            store=self.store,
            deadline=self.deadline,
            broker_wait=self.broker_wait,
            keys=keys,
        )
        try:
            await engine.start()
            yield engine
        finally:
            await engine.aclose()
            if own_bus:
                await bus.close()
