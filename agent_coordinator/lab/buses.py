"""An event bus in front of another, for the lab's wrappers to build on.

The fault lab's :class:`~agent_coordinator.lab.faults.FaultyBus` (duplicates, an
outage of one group) and ``coordinator compare``'s metered bus (deliveries per run)
each change one or two calls of the bus they wrap; :class:`DelegatingBus` forwards
all the others, so a call the seam gains is forwarded in one place rather than
forgotten in one of them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_coordinator.bus.base import BusStats, DeadLetter, EventBus, Handler, Subscription
    from agent_coordinator.core.events import Event

__all__ = ["DelegatingBus"]


class DelegatingBus:
    """An :class:`~agent_coordinator.bus.base.EventBus` that forwards every call to
    ``inner``; subclasses override the calls they change."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner

    async def publish(self, event: Event) -> None:
        await self.inner.publish(event)

    async def subscribe(
        self, group: str, types: Collection[str], handler: Handler, *, concurrency: int = 1
    ) -> Subscription:
        return await self.inner.subscribe(group, types, handler, concurrency=concurrency)

    async def close(self) -> None:
        await self.inner.close()

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.inner.dead_letters()

    async def replay_dead_letters(self, group: str | None = None) -> int:
        return await self.inner.replay_dead_letters(group)

    def stats(self) -> BusStats:
        return self.inner.stats()

    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """The inner bus's ``wait_idle`` (part of the EventBus protocol)."""
        await self.inner.wait_idle(timeout)
