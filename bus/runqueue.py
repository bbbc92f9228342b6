"""Runs to carry out, as a durable work queue on the event bus: how orchestration
workers share the runs of a deployment.

A submitter publishes one ``RunSubmitted`` event per input (:meth:`BusRunQueue.submit`,
behind :meth:`agent_coordinator.core.run.Coordinator.submit`); every orchestration
worker joins one consumer group, ``<workflow>.orchestrator``
(:meth:`BusRunQueue.serve`), and carries each run it is handed to its end or to a
pause for a person, then acks it. The broker does the distribution, the redelivery
and the bookkeeping: RabbitMQ's quorum queue hands a dead worker's unacked runs to
another worker as soon as its connection closes, NATS JetStream after the
consumer's ``ack_wait`` (its URL option); a handler that fails is retried with
backoff and dead-lettered after ``max_deliveries``, as any event. Nothing here
schedules anything.

What the queue does not give -- that one run is advanced by one process at a time,
even when a live worker's run is redelivered (a broker connection lost while the
worker and its database session live on) -- is the run lock's job
(:class:`~agent_coordinator.core.postgres.PostgresRunLocks`, held by the
:class:`~agent_coordinator.core.run.Coordinator`). A submission of an id that ran
already is harmless: the coordinator answers an ended run from the record and
carries on one in flight.

On a broker, submissions are signed by the runs' owner and a worker refuses
(dead-letters) one that is not, as participants refuse forged events: whoever may
publish to the broker must not start runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from agent_coordinator.bus.base import EventBus, Subscription
from agent_coordinator.core.errors import InvalidInput, MalformedEvent, UntrustedEvent
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.saga import OWNER
from agent_coordinator.core.signing import Keyring
from agent_coordinator.core.workflow import Workflow

__all__ = ["RUN_SUBMITTED", "BusRunQueue"]

log = logging.getLogger(__name__)

#: The event type of a run handed to the workers.
RUN_SUBMITTED = "RunSubmitted"

Carry = Callable[[BaseModel], Awaitable[WorkflowResult]]


class BusRunQueue:
    """A :class:`~agent_coordinator.core.run.RunQueue` on ``bus`` for ``workflow``'s runs.

    ``keys`` sign submissions as the owner and check them in :meth:`serve` (required
    on a broker by the CLI; without keys nothing is signed or checked). ``factory``
    mints the submissions (its seed makes their ids: one id per workflow id and
    seed, so a NATS publish of the same submission twice is deduplicated).
    """

    def __init__(
        self, bus: EventBus, workflow: Workflow, *, keys: Keyring | None = None, factory: EventFactory | None = None
    ) -> None:
        self.bus = bus
        self.workflow = workflow
        self.keys = keys
        self.factory = factory or EventFactory(signer=keys)
        self.group = f"{workflow.name}.orchestrator"

    async def submit(self, input: BaseModel, *, run_id: str) -> str:
        """Queue ``input`` (validated) for a worker; its workflow id once the broker has it."""
        workflow_id = self.workflow.workflow_id(input)
        if self.keys is not None:
            self.keys.ensure_signer(OWNER)  # made on first use, where the keys may be made
        event = self.factory.event(
            RUN_SUBMITTED,
            subject=workflow_id,
            source=f"workflow/{self.workflow.name}",
            data={"input": input.model_dump(mode="json"), "run_id": run_id},
            signed_by=OWNER,
        )
        await self.bus.publish(event)
        return workflow_id

    def _input(self, event: Event) -> BaseModel:
        """The input ``event`` submits, checked: signed by the owner (with keys), of this
        workflow, valid. Anything else can never succeed: MalformedEvent (dead-lettered)."""
        if event.type != RUN_SUBMITTED:
            raise MalformedEvent(f"{event.type} {event.id} is not a {RUN_SUBMITTED}: the run queue takes nothing else")
        if self.keys is not None:
            signer = self.keys.verify(event)
            if signer != OWNER:
                raise UntrustedEvent(
                    f"{RUN_SUBMITTED} {event.id} of {event.subject!r} is signed by {signer!r}, "
                    f"but only {OWNER!r} may submit runs of workflow {self.workflow.name!r}"
                )
        try:
            item = self.workflow.validate_input(event.data.get("input"))
        except InvalidInput as exc:
            raise MalformedEvent(f"{RUN_SUBMITTED} {event.id} carries an input that is not valid: {exc}") from exc
        if self.workflow.workflow_id(item) != event.subject:
            raise MalformedEvent(
                f"{RUN_SUBMITTED} {event.id} is about {event.subject!r} but its input is "
                f"{self.workflow.workflow_id(item)!r}'s"
            )
        return item

    async def serve(self, carry: Carry, *, concurrency: int = 16) -> Subscription:
        """Join the workers' group: each submission handed to this process is checked
        and ``carry``-ed (a coordinator's ``run``: to its end or a pause) before it is
        acked; a ``carry`` that raises leaves it to be redelivered."""

        async def handle(event: Event) -> None:
            item = self._input(event)
            began = time.perf_counter()
            result = await carry(item)
            log.info(
                "run %s: %s",
                result.workflow_id,
                result.status.value,
                extra={
                    "workflow_id": result.workflow_id,
                    "status": result.status.value,
                    "duration_ms": round((time.perf_counter() - began) * 1000, 1),
                },
            )

        return await self.bus.subscribe(self.group, [RUN_SUBMITTED], handle, concurrency=concurrency)
