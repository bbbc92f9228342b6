"""The run API: a workflow bound to its agents and a coordination mode.

The mode is the only thing that depends on how runs are coordinated; everything else
(the workflow, the agents, the results, the events) is the same in both. The kernel
knows neither coordinator: a mode (:class:`Mode`) is an object that opens an
:class:`Engine` -- :class:`agent_coordinator.graphs.Orchestration` or
:class:`agent_coordinator.bus.Choreography` -- and the façade
(:func:`agent_coordinator.open_coordinator`) maps a mode's name onto one::

    async with open_coordinator(workflow, agents=agents, mode=Choreography(bus=bus)) as coordinator:
        result = await coordinator.run({"order_id": "o-1", ...})
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import EventLog, MemoryEventLog, last_events
from agent_coordinator.core.events import Clock, EventFactory
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.core.workflow import Workflow

if TYPE_CHECKING:
    from agent_coordinator.core.agent import Agent
    from agent_coordinator.core.runner import StepRunner
    from agent_coordinator.core.signing import Keyring

__all__ = ["MODES", "Coordinator", "Engine", "Mode", "RunLock", "RunQueue", "open_coordinator"]

log = logging.getLogger(__name__)

#: The names of the two modes (:attr:`Mode.name`).
MODES: tuple[str, ...] = ("orchestration", "choreography")


class Engine(Protocol):
    """What a coordination mode provides.

    * ``run`` -- run one validated input until it ends or pauses for an approval;
    * ``resume`` -- carry on a run that stopped short (a crash) until it ends;
    * ``decide`` -- answer a pending approval (``{"approved", "by", "note"}``);
    * ``aclose`` -- release what the engine opened.
    """

    mode: str

    async def run(self, input: BaseModel) -> WorkflowResult: ...

    async def resume(self, workflow_id: str) -> WorkflowResult: ...

    async def decide(self, workflow_id: str, decision: dict[str, Any]) -> WorkflowResult: ...

    async def aclose(self) -> None: ...


class RunLock(Protocol):
    """Who may advance a run right now, between processes.

    ``hold(workflow_id)`` is an async context manager: inside it, no other process
    holding the same lock set advances ``workflow_id``. It may wait for another
    holder, and raises :class:`~agent_coordinator.core.errors.CoordinatorError` when
    it cannot get the lock in its time (the caller then tries again later). A holder
    whose lock is lost (its database session died) is cancelled and its ``hold``
    raises :class:`~agent_coordinator.core.errors.CoordinatorError`: the run is
    someone else's now. (:class:`~agent_coordinator.core.postgres.PostgresRunLocks`.)
    """

    def hold(self, workflow_id: str) -> AbstractAsyncContextManager[None]: ...


class RunQueue(Protocol):
    """Where runs go to be carried out by workers (a durable work queue).

    ``submit(input, run_id=)`` queues ``input`` (validated) and returns its workflow
    id once the queue has it durably; submitting an id again is harmless (the worker
    answers an ended run from the record). (:class:`~agent_coordinator.bus.runqueue.BusRunQueue`.)
    """

    async def submit(self, input: BaseModel, *, run_id: str) -> str: ...


class Coordinator:
    """A workflow bound to its agents and a coordination engine; mode-independent.

    Validates inputs (raising :class:`~agent_coordinator.core.errors.InvalidInput` naming every
    bad field) and runs them, one at a time or many concurrently.

    A workflow id is a durable identity, the same in both modes: the event log is
    the record, so an id whose run the log shows ended is answered from it (the
    result is marked ``recorded``; nothing runs again), and an id whose run is in the
    log but not ended is carried on (:meth:`resume`) instead of started twice.
    """

    def __init__(
        self,
        workflow: Workflow,
        engine: Engine,
        *,
        saga: Saga,
        event_log: EventLog,
        run_id: str,
        forget_ended: bool = False,
        lock: RunLock | None = None,
        queue: RunQueue | None = None,
    ) -> None:
        self.workflow = workflow
        self.engine = engine
        self.saga = saga
        self.event_log = event_log
        self.run_id = run_id
        # A log the coordinator made itself is only a working record: an ended run's
        # events are in its result, so they are dropped to keep memory flat.
        self._forget_ended = forget_ended and isinstance(event_log, MemoryEventLog)
        self.lock = lock
        self.queue = queue

    def _holding(self, workflow_id: str) -> AbstractAsyncContextManager[None]:
        """The run lock for ``workflow_id`` (nothing to hold without one: one process)."""
        return self.lock.hold(workflow_id) if self.lock is not None else nullcontext()

    def _ended(self, result: WorkflowResult) -> WorkflowResult:
        if self._forget_ended and result.status.ended:
            assert isinstance(self.event_log, MemoryEventLog)
            self.event_log.forget(result.workflow_id)
        return result

    @property
    def mode(self) -> str:
        return self.engine.mode

    def recorded(self, workflow_id: str) -> WorkflowResult | None:
        """``workflow_id``'s result as the event log records it, if its run ended; else None."""
        logged = self.event_log.events(workflow_id)
        if logged and self.saga.is_terminal(logged[-1].type):
            return self.saga.result(workflow_id, logged, mode=self.mode, recorded=True)
        return None

    async def _run(self, item: BaseModel) -> WorkflowResult:
        workflow_id = self.workflow.workflow_id(item)
        # The lock first, then the look at the log: another process may have ended
        # the run while this one waited for it.
        async with self._holding(workflow_id):
            answer = self.recorded(workflow_id)
            if answer is not None:
                return answer
            if self.event_log.events(workflow_id):
                return self._ended(await self.engine.resume(workflow_id))
            return self._ended(await self.engine.run(item))

    async def run(self, input: Any, *, context: dict[str, Any] | None = None) -> WorkflowResult:
        """Validate ``input`` (a mapping, JSON text or model) and run it to its end (or
        to a pause for a person); an id the log knows is answered or carried on."""
        return await self._run(self.workflow.validate_input(input, context=context))

    async def resume(self, workflow_id: str) -> WorkflowResult:
        """Carry on the run of ``workflow_id`` that stopped short, until it ends (an
        ended one is answered from the log). Raises CoordinatorError when the log and
        the engine know nothing of it."""
        async with self._holding(workflow_id):
            answer = self.recorded(workflow_id)
            if answer is not None:
                return answer
            return self._ended(await self.engine.resume(workflow_id))

    async def approve(self, workflow_id: str, *, by: str, note: str = "") -> WorkflowResult:
        """Approve the step ``workflow_id`` is waiting on; the run carries on."""
        return await self._decide(workflow_id, {"approved": True, "by": by, "note": note})

    async def reject(self, workflow_id: str, *, by: str, note: str = "") -> WorkflowResult:
        """Reject the step ``workflow_id`` is waiting on: it fails, the rest is undone."""
        return await self._decide(workflow_id, {"approved": False, "by": by, "note": note})

    async def _decide(self, workflow_id: str, decision: dict[str, Any]) -> WorkflowResult:
        async with self._holding(workflow_id):
            return self._ended(await self.engine.decide(workflow_id, decision))

    # -- runs carried out by workers ----------------------------------------------------

    async def submit(self, input: Any, *, context: dict[str, Any] | None = None) -> str:
        """Validate ``input`` and queue it for the workers (see :class:`RunQueue`);
        returns its workflow id. Follow it with :meth:`results`. Raises
        :class:`CoordinatorError` when this coordinator has no queue."""
        if self.queue is None:
            raise CoordinatorError(
                "this coordinator has no run queue to submit to: open it with queue= (the CLI: "
                "coordinator run --submit with --bus and shared --state)"
            )
        return await self.queue.submit(self.workflow.validate_input(input, context=context), run_id=self.run_id)

    async def results(self, workflow_ids: Iterable[str], *, poll: float = 0.25) -> AsyncIterator[WorkflowResult]:
        """Yield each of ``workflow_ids``'s results as the event log shows its run ended,
        paused for a person or stopped (its model was out: it waits for ``resume``) --
        runs carried out anywhere (by workers, say), read from the shared log every
        ``poll`` seconds, in the order they end. It waits as long as it takes: bound
        it with ``asyncio.timeout``."""
        pending = dict.fromkeys(workflow_ids)
        while pending:
            for workflow_id, last in last_events(self.event_log, list(pending)).items():
                if self.saga.is_terminal(last.type) or self.saga.is_pause(last.type) or self.saga.is_stop(last.type):
                    del pending[workflow_id]
                    logged = self.event_log.events(workflow_id)
                    took = (logged[-1].time - logged[0].time).total_seconds() * 1000 if logged else 0.0
                    yield self.saga.result(workflow_id, logged, mode=self.mode, duration_ms=took)
            if not pending:
                return
            await asyncio.sleep(poll)  # the shared log is polled: other processes write it

    def _stopped(self, workflow_id: str, exc: Exception) -> WorkflowResult:
        """A run the coordinator could not carry on: ``failed`` (not ended; resumable)
        with the reason, from what the log holds -- one run's trouble is not the batch's."""
        log.error("run %s stopped: %s", workflow_id, exc, exc_info=not isinstance(exc, CoordinatorError))
        result = self.saga.result(workflow_id, self.event_log.events(workflow_id), mode=self.mode)
        if result.status.ended:
            return result
        return result.model_copy(
            update={"status": WorkflowStatus.FAILED, "reason": f"the coordinator could not carry the run on: {exc}"}
        )

    async def stream(
        self, inputs: Iterable[BaseModel] | AsyncIterable[BaseModel], *, concurrency: int = 16
    ) -> AsyncIterator[WorkflowResult]:
        """Run validated inputs with at most ``concurrency`` in flight and yield each
        result as its run ends (or pauses), in the order they end.

        Inputs are pulled as slots free up, so neither the inputs nor the results of a
        long batch are held in memory at once. A run that raises yields a ``failed``
        result with the reason instead of stopping the others.
        """
        async for result in self._each(inputs, self._run, self.workflow.workflow_id, concurrency):
            yield result

    async def resume_stream(
        self, workflow_ids: Iterable[str], *, concurrency: int = 16
    ) -> AsyncIterator[WorkflowResult]:
        """:meth:`resume` each of ``workflow_ids`` (at most ``concurrency`` at once),
        yielding results as they end; one that cannot be resumed yields ``failed``."""
        async for result in self._each(workflow_ids, self.resume, str, concurrency):
            yield result

    async def _each(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        act: Callable[[Any], Awaitable[WorkflowResult]],
        identify: Callable[[Any], str],
        concurrency: int,
    ) -> AsyncIterator[WorkflowResult]:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        source = _aiter(items)
        running: set[asyncio.Task[WorkflowResult]] = set()

        async def one(item: Any) -> WorkflowResult:
            try:
                return await act(item)
            except Exception as exc:
                return self._stopped(identify(item), exc)

        exhausted = False
        try:
            while running or not exhausted:
                while not exhausted and len(running) < concurrency:
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    running.add(asyncio.ensure_future(one(item)))
                if not running:
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def run_many(
        self,
        inputs: Iterable[BaseModel],
        *,
        concurrency: int = 16,
        on_result: Callable[[WorkflowResult], Awaitable[None] | None] | None = None,
    ) -> list[WorkflowResult]:
        """Run validated inputs with at most ``concurrency`` in flight; results in input
        order. (:meth:`stream` does the same without holding every result.)"""
        items = list(inputs)
        order = {self.workflow.workflow_id(item): i for i, item in enumerate(items)}
        results: list[WorkflowResult | None] = [None] * len(items)
        async for result in self.stream(items, concurrency=concurrency):
            results[order[result.workflow_id]] = result
            if on_result is not None:
                maybe = on_result(result)
                if maybe is not None:
                    await maybe
        return [r for r in results if r is not None]


async def _aiter(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item


class Mode(Protocol):
    """A way to coordinate a workflow's runs: it opens the engine that runs them.

    The two modes are :class:`agent_coordinator.graphs.Orchestration` (a LangGraph
    supervisor over a checkpointer) and :class:`agent_coordinator.bus.Choreography`
    (participants on an event bus); each carries what only it needs, so nothing here
    depends on the mode.

    * ``name`` -- ``"orchestration"`` or ``"choreography"``: a result's ``mode``;
    * ``open(runner, saga, event_log=, run_id=, keys=)`` -- an async context manager
      that yields the :class:`Engine`, started, and closes whatever it opened on exit.
      ``keys`` sign what the engine's participants emit (and, in choreography, check
      what they receive).
    """

    @property
    def name(self) -> str: ...

    def open(
        self, runner: StepRunner, saga: Saga, *, event_log: EventLog, run_id: str, keys: Keyring | None
    ) -> AbstractAsyncContextManager[Engine]: ...


@asynccontextmanager
async def open_coordinator(
    workflow: Workflow,
    *,
    agents: Sequence[Agent],
    mode: Mode,
    settings: RunSettings | None = None,
    event_log: EventLog | None = None,
    clock: Clock | None = None,
    run_id: str | None = None,
    keys: Keyring | None = None,
    lock: RunLock | None = None,
    queue: RunQueue | None = None,
    callbacks: Sequence[Any] = (),
    tags: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> AsyncIterator[Coordinator]:
    """The :class:`Coordinator` of ``workflow`` run by ``agents`` in ``mode``, closed on exit.

    * ``settings`` -- retries, re-asks, timeouts, parameters, seed (:class:`RunSettings`);
    * ``event_log`` -- the record of every run (default: in memory, and ended runs
      are forgotten to keep memory flat); pair a durable mode with a durable log;
    * ``clock`` -- event times (a :class:`~agent_coordinator.core.events.LogicalClock`
      for reproducible logs); ``run_id`` -- this session's run id (default: random);
    * ``keys`` (a :class:`~agent_coordinator.core.signing.Keyring`) signs every event
      as its emitter, in either mode; signatures are deterministic, so both modes
      still emit byte-identical events;
    * ``lock`` (a :class:`RunLock`) -- held while this process advances a run, so
      that processes sharing the state never advance one run at once;
    * ``queue`` (a :class:`RunQueue`) -- where :meth:`Coordinator.submit` sends runs
      for workers;
    * ``callbacks``, ``tags``, ``metadata`` -- LangChain's: passed to every model and
      tool run, whose metadata also names the workflow id (and ``thread_id``), step
      and agent; with callbacks (or LangSmith tracing by environment) tool calls go
      through LangChain so that they are traced too.

    Raises :class:`~agent_coordinator.core.errors.WorkflowDefinitionError` when the
    workflow and agents don't fit.
    """
    # Imported here: the runner brings LangChain, which a command that only names the
    # modes (or reads the log) should not pay for.
    from agent_coordinator.core.runner import StepRunner

    settings = settings or RunSettings()
    own_log = event_log is None
    event_log = event_log if event_log is not None else MemoryEventLog()
    run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
    runner = StepRunner(workflow, agents, settings=settings, callbacks=callbacks, tags=tags, metadata=metadata)
    saga = Saga(workflow, factory=EventFactory(seed=settings.seed, clock=clock, signer=keys))
    async with mode.open(runner, saga, event_log=event_log, run_id=run_id, keys=keys) as engine:
        yield Coordinator(
            workflow,
            engine,
            saga=saga,
            event_log=event_log,
            run_id=run_id,
            forget_ended=own_log,
            lock=lock,
            queue=queue,
        )
