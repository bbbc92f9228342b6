"""The two coordination modes by name, with what each needs opened from its URLs.

This is the one place that branches on the mode: the CLI, the compare lab and the
benchmarks name a mode and its resources the way a command line does (``--state``,
``--bus``, ``--outbox``, ...) and get back a :class:`~agent_coordinator.core.run.Mode`
object -- :class:`~agent_coordinator.graphs.Orchestration` or
:class:`~agent_coordinator.bus.Choreography` -- whose resources are closed on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_coordinator.bus import Choreography, open_bus
from agent_coordinator.bus.outbox import open_participant_store
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import EventLog
from agent_coordinator.core.events import Clock
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.run import MODES, Coordinator, Mode, RunLock, RunQueue
from agent_coordinator.core.run import open_coordinator as core_open_coordinator
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.graphs import Orchestration
from agent_coordinator.graphs.checkpoints import open_checkpointer

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agent_coordinator.bus.base import EventBus
    from agent_coordinator.core.agent import Agent
    from agent_coordinator.core.signing import Keyring

__all__ = [
    "MODES",
    "Choreography",
    "ModeSpec",
    "Orchestration",
    "arun_workflow",
    "as_mode",
    "mode_named",
    "open_coordinator",
    "open_mode",
    "run_workflow",
]


def mode_named(name: str) -> Orchestration | Choreography:
    """The mode called ``name``, with its defaults (everything in memory). Raises
    :class:`CoordinatorError` naming the modes for any other name."""
    if name == "orchestration":
        return Orchestration()
    if name == "choreography":
        return Choreography()
    raise CoordinatorError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}")


@dataclass(frozen=True)
class ModeSpec:
    """A mode as a command line names it.

    Orchestration: ``state`` (``None``/``sqlite``: ``<state_dir>/checkpoints.db``,
    ``sqlite:///file.db``, ``postgresql://...``, ``memory``) and ``supervisor`` (a chat
    model for the model-driven supervisor). Choreography: ``bus`` (a URL; ``memory://``
    by default), ``namespace`` (default broker names), ``outbox`` (a SQLite file or
    ``postgresql://``; on a broker the state directory's ``outbox.db`` by default),
    ``participants`` hosted here, ``deadline`` and ``concurrency``.
    """

    name: str
    state_dir: Path
    state: str | None = None
    supervisor: BaseChatModel | None = None
    bus: str = "memory://"
    namespace: str | None = None
    outbox: str | None = None
    participants: Collection[str] | None = None
    deadline: float | None = None
    concurrency: int = 16
    #: Already open, owned by the caller (a measuring wrapper, say): used instead of
    #: what ``state`` / ``bus`` name, and not closed here.
    checkpointer: BaseCheckpointSaver[Any] | None = None
    event_bus: EventBus | None = None

    @property
    def on_a_broker(self) -> bool:
        return self.name == "choreography" and not self.bus.startswith("memory:")


@asynccontextmanager
async def open_mode(spec: ModeSpec) -> AsyncIterator[Orchestration | Choreography]:
    """Open what ``spec``'s mode needs (a checkpointer; a bus and a participant store),
    yield the mode, and close them on exit. Raises :class:`CoordinatorError` for an
    unknown mode and for state or a bus that cannot be used (naming it)."""
    async with AsyncExitStack() as stack:
        if spec.name == "orchestration":
            checkpointer = spec.checkpointer
            if checkpointer is None:
                checkpointer = await stack.enter_async_context(open_checkpointer(spec.state, state_dir=spec.state_dir))
            yield Orchestration(checkpointer=checkpointer, supervisor=spec.supervisor)
        elif spec.name == "choreography":
            bus = spec.event_bus
            if bus is None:
                bus = open_bus(spec.bus, namespace=spec.namespace)
                stack.push_async_callback(bus.close)
            store = None
            if spec.outbox or spec.on_a_broker:
                # On a broker, participants commit through an outbox shared by the
                # processes of this machine (or a PostgreSQL one for several).
                store = await open_participant_store(spec.outbox or spec.state_dir / "outbox.db")
                stack.push_async_callback(store.close)
            yield Choreography(
                bus=bus,
                participants=spec.participants,
                store=store,
                deadline=spec.deadline,
                concurrency=spec.concurrency,
            )
        else:
            raise CoordinatorError(f"unknown mode {spec.name!r}; choose one of: {', '.join(MODES)}")


def as_mode(mode: Mode | str) -> Mode:
    """``mode`` itself, or the mode it names (see :func:`mode_named`)."""
    return mode_named(mode) if isinstance(mode, str) else mode


@asynccontextmanager
async def open_coordinator(
    workflow: Workflow,
    *,
    agents: Sequence[Agent],
    mode: Mode | str = "orchestration",
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
    """:func:`agent_coordinator.core.run.open_coordinator`, with ``mode`` also given by
    name (``"orchestration"`` or ``"choreography"``, everything in memory)::

        async with open_coordinator(workflow, agents=agents, mode="choreography") as coordinator: ...
        async with open_coordinator(workflow, agents=agents, mode=Orchestration(checkpointer=saver)) as c: ...
    """
    async with core_open_coordinator(
        workflow,
        agents=agents,
        mode=as_mode(mode),
        settings=settings,
        event_log=event_log,
        clock=clock,
        run_id=run_id,
        keys=keys,
        lock=lock,
        queue=queue,
        callbacks=callbacks,
        tags=tags,
        metadata=metadata,
    ) as coordinator:
        yield coordinator


async def arun_workflow(
    workflow: Workflow, input: Any, *, agents: Sequence[Agent], mode: Mode | str = "orchestration", **options: Any
) -> WorkflowResult:
    """Run one workflow input to its end; ``options`` as for :func:`open_coordinator`."""
    async with open_coordinator(workflow, agents=agents, mode=mode, **options) as coordinator:
        return await coordinator.run(input)


def run_workflow(
    workflow: Workflow, input: Any, *, agents: Sequence[Agent], mode: Mode | str = "orchestration", **options: Any
) -> WorkflowResult:
    """Blocking twin of :func:`arun_workflow` (starts its own event loop)."""
    return asyncio.run(arun_workflow(workflow, input, agents=agents, mode=mode, **options))
