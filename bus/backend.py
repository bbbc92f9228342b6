"""What every event bus backend does the same way, written once: :class:`BusBackend`.

The in-memory bus and the broker buses (through :class:`agent_coordinator.bus.broker.BrokerBus`)
derive from it. It implements the parts of the :class:`~agent_coordinator.bus.base.EventBus`
methods the contract fixes -- refusing work after close, checking ``subscribe``'s
arguments, closing once, counting, bounding ``wait_idle`` -- and calls a backend's
hooks (``_publish``, ``_join``, ``_shut_down``, ``_replay``, ``_until_idle``,
``_work_left``) for the part that differs. A backend never repeats those checks, so
all of them refuse the same calls with the same messages.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection
from typing import Any, ClassVar

from agent_coordinator.bus.base import BusStats, ClosesOnExit, DeadLetter, Handler, Subscription, subscription_types
from agent_coordinator.core import telemetry
from agent_coordinator.core.errors import BusClosed, BusError, MalformedEvent
from agent_coordinator.core.events import Event

__all__ = ["BusBackend", "check_delivery_options", "event_json", "stop_workers"]


def event_json(event: Event) -> str:
    """``event`` in the JSON event format every backend carries; :class:`BusError`
    (the publish is refused) when its data is not JSON-serialisable."""
    try:
        return event.to_json()
    except (TypeError, ValueError) as exc:
        raise BusError(
            f"cannot publish {event.type} {event.id}: its data is not JSON-serialisable ({exc});"
            " put only JSON types (str, int, float, bool, None, lists, dicts) in event.data"
        ) from exc


def check_delivery_options(*, max_deliveries: int, redelivery_delay: float, close_timeout: float) -> None:
    """``ValueError`` naming the option when one of the options every backend takes is
    out of range (the constructors call it before anything else)."""
    if max_deliveries < 1:
        raise ValueError(f"max_deliveries must be at least 1 (got {max_deliveries})")
    if redelivery_delay < 0:
        raise ValueError(f"redelivery_delay must be >= 0 seconds (got {redelivery_delay})")
    if close_timeout < 0:
        raise ValueError(f"close_timeout must be >= 0 seconds (got {close_timeout})")


async def stop_workers(
    workers: Collection[asyncio.Task[Any]],
    *,
    busy: Callable[[asyncio.Task[Any]], bool],
    grace: float,
    group: str,
    logger: logging.Logger,
) -> None:
    """Stop the worker tasks of one member, as every close does: idle workers (not
    ``busy`` in a handler) are cancelled at once -- they lose nothing; busy ones get
    ``grace`` seconds to finish their handler, then are cancelled (each worker gives
    its delivery back to the group when cancelled). The calling task is left alone:
    it is a handler closing its own member, and returns by itself. A worker that died
    of an exception is logged; handlers cancelled after a grace are warned about."""
    current = asyncio.current_task()
    others = [w for w in workers if w is not current]
    for worker in others:
        if not busy(worker):
            worker.cancel()
    if not others:
        return
    _, late = await asyncio.wait(others, timeout=grace) if grace > 0 else (set(), set(others))
    for worker in late:
        worker.cancel()
    if late:
        if grace > 0:
            logger.warning(
                "group %r: %d handler(s) still running after %ss; cancelled (their events are nacked)",
                group,
                len(late),
                grace,
            )
        await asyncio.wait(late)
    for worker in others:
        if not worker.cancelled() and (exc := worker.exception()) is not None:
            logger.error("a worker of group %r died", group, exc_info=exc)


class BusBackend(ClosesOnExit, abc.ABC):
    """The common part of an :class:`~agent_coordinator.bus.base.EventBus` backend.

    * :meth:`publish` refuses with ``BusClosed`` after close, calls ``_publish`` and
      counts the event as published once it returned;
    * :meth:`subscribe` checks its arguments as the contract states
      (:func:`~agent_coordinator.bus.base.subscription_types`) and calls ``_join`` with the
      types as a set;
    * :meth:`close` runs ``_shut_down`` once; a second call waits for the first;
    * :meth:`replay_dead_letters` refuses with ``BusClosed`` after close;
    * :meth:`stats` returns a copy of ``_stats``, which the backend counts into;
    * :meth:`wait_idle` bounds ``_until_idle`` by ``timeout`` and names
      ``_work_left`` in its ``TimeoutError``.
    """

    _kind: ClassVar[str]
    """How messages name the backend: ``"in-memory"``, ``"RabbitMQ"``, ``"NATS JetStream"``."""
    _logger: ClassVar[logging.Logger]
    """Where the backend logs (its module's logger, as operators configure it)."""
    max_deliveries: int

    def __init__(self) -> None:
        self._stats = BusStats()
        self._closed = False
        self._close_finished = asyncio.Event()

    async def publish(self, event: Event) -> None:
        """Route ``event`` to every group bound to its type (see
        :meth:`agent_coordinator.bus.base.EventBus.publish`; the backend's class says
        when it is accepted). Raises ``BusClosed`` after :meth:`close`, ``BusError``
        when the event was not accepted."""
        if self._closed:
            raise BusClosed(f"cannot publish {event.type} {event.id}: the bus is closed; open a new bus to publish")
        with telemetry.span(
            f"publish {event.type}",
            kind=telemetry.SpanKind.PRODUCER,
            parent=event,
            attributes={
                "messaging.system": self._kind,
                "messaging.operation.type": "publish",
                "messaging.message.id": event.id,
                "coordinator.workflow_id": event.subject,
            },
        ):
            await self._publish(event)
        self._stats.published += 1

    async def subscribe(
        self,
        group: str,
        types: Collection[str],
        handler: Handler,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Join ``group`` as a member handling ``types`` (see
        :meth:`agent_coordinator.bus.base.EventBus.subscribe`); the group is bound to
        them on return."""
        wanted = subscription_types(group, types, concurrency, closed=self._closed)
        return await self._join(group, wanted, handler, concurrency)

    async def close(self) -> None:
        """Stop accepting publishes and subscribes, let handlers finish (bounded by the
        backend's ``close_timeout``, then cancelled: their events are nacked), stop the
        members (see the backend's class for where unhandled events stay). Closing
        twice is a no-op; the second call waits for the first to finish."""
        if self._closed:
            await self._close_finished.wait()
            return
        self._closed = True
        try:
            await self._shut_down()
        finally:
            self._close_finished.set()

    async def replay_dead_letters(self, group: str | None = None) -> int:
        """Put the dead letters of ``group`` (all groups when None) back into their
        group's queue with a fresh delivery count; return how many were replayed.
        Malformed bodies stay dead letters. Raises ``BusClosed`` after :meth:`close`."""
        if self._closed:
            raise BusClosed("cannot replay dead letters: the bus is closed")
        return await self._replay(group)

    def stats(self) -> BusStats:
        """A snapshot of this bus's counters (this process only; see :class:`~agent_coordinator.bus.base.BusStats`)."""
        return dataclasses.replace(self._stats)

    # A timeout parameter (not asyncio.timeout around the call) so the error can name what is busy.
    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once the bus is idle, as :meth:`agent_coordinator.bus.base.EventBus.wait_idle`
        defines it for this backend; ``TimeoutError`` naming the work left after
        ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._until_idle()
        except TimeoutError:
            raise TimeoutError(f"{self._kind} bus not idle after {timeout}s: {self._work_left()}") from None

    def _dead_letter_now(self, exc: Exception, *, event_id: str, group: str, deliveries: int) -> bool:
        """The contract's verdict on a delivery whose handler raised ``exc``, logged:
        True to dead-letter it now, False to redeliver it. At once for
        :class:`~agent_coordinator.core.errors.MalformedEvent` (the event itself is at fault
        -- missing data, a bad signature -- so retrying cannot help); after the
        ``max_deliveries``-th failed delivery otherwise."""
        if isinstance(exc, MalformedEvent):
            self._logger.error(
                "dead-lettering event %s for group %r at once: %s: %s", event_id, group, type(exc).__name__, exc
            )
            return True
        if deliveries >= self.max_deliveries:
            self._logger.warning(
                "dead-lettering event %s for group %r after %d deliveries", event_id, group, deliveries, exc_info=exc
            )
            return True
        self._logger.debug(
            "handler of group %r failed (delivery %d of %d); redelivering",
            group,
            deliveries,
            self.max_deliveries,
            exc_info=exc,
        )
        return False

    @abc.abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """The events currently dead-lettered, oldest first (see the protocol)."""

    # -- what each backend does its own way ------------------------------------------

    @abc.abstractmethod
    async def _publish(self, event: Event) -> None:
        """Hand ``event`` to the groups bound to its type; return once accepted."""

    @abc.abstractmethod
    async def _join(self, group: str, types: set[str], handler: Handler, concurrency: int) -> Subscription:
        """Bind ``group`` to ``types`` (checked) and start a member running ``handler``."""

    @abc.abstractmethod
    async def _shut_down(self) -> None:
        """Close for good (called once, with ``_closed`` already set)."""

    @abc.abstractmethod
    async def _replay(self, group: str | None) -> int:
        """Replay the dead letters of ``group`` (all when None); the bus is open."""

    @abc.abstractmethod
    async def _until_idle(self) -> None:
        """Return once idle; :meth:`wait_idle` bounds the wait."""

    @abc.abstractmethod
    def _work_left(self) -> str:
        """What keeps the bus from being idle, for the ``TimeoutError``."""
