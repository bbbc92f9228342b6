"""Backends the bus contract suite runs against, and the fixtures that open them.

To put a new backend through the suite, append one :class:`BackendConfig` to
``BACKENDS`` (mark it ``pytest.mark.services`` when it needs a running broker) and
set its capability flags honestly: a test for a capability a backend lacks is
skipped, never rewritten for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from bus import EventBus, InMemoryBus


class BusFactory(Protocol):
    """Opens a fresh bus. Options the suite passes: ``max_deliveries``,
    ``redelivery_delay``, ``duplicate_delivery`` (each only when the matching
    capability flag is set)."""

    def __call__(self, **options: Any) -> Awaitable[EventBus]: ...


@dataclass(frozen=True)
class BackendConfig:
    """One backend under test: how to open it, how to wait for it, what it can do.

    * ``settle`` -- waits until the bus has nothing queued, in flight or awaiting
      redelivery; used to assert that nothing *more* arrives (no extra deliveries).
    * ``supports_dead_letters`` -- ``dead_letters()``/``replay_dead_letters()`` work.
    * ``supports_duplicate_delivery_switch`` -- ``duplicate_delivery=True`` is honoured.
    * ``fifo_per_group`` -- one member with concurrency 1 sees publish order.
    * ``drains_on_close`` -- ``close()`` handles everything queued before returning
      (a broker backend may instead leave it in the broker).
    """

    name: str
    open: BusFactory
    settle: Callable[[EventBus], Awaitable[None]]
    supports_dead_letters: bool = True
    supports_duplicate_delivery_switch: bool = True
    fifo_per_group: bool = True
    drains_on_close: bool = True
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


async def _open_memory(**options: Any) -> EventBus:
    return InMemoryBus(**options)


async def _settle_memory(bus: EventBus) -> None:
    assert isinstance(bus, InMemoryBus)
    await bus.wait_idle(timeout=5.0)


def _broker_backends() -> tuple[BackendConfig, ...]:
    # Each broker's config lives in its own module (backend_<name>.py) so backends are
    # added without editing each other's code.
    from tests.contract.backend_nats import NATS_BACKENDS
    from tests.contract.backend_rabbitmq import RABBITMQ_BACKENDS

    return (*RABBITMQ_BACKENDS, *NATS_BACKENDS)


BACKENDS: tuple[BackendConfig, ...] = (
    BackendConfig(name="memory", open=_open_memory, settle=_settle_memory),
    *_broker_backends(),
)


@pytest.fixture(params=[pytest.param(c, id=c.name, marks=c.marks) for c in BACKENDS])
def bus_backend(request: pytest.FixtureRequest) -> BackendConfig:
    """The backend under test (the suite runs once per entry of ``BACKENDS``)."""
    config: BackendConfig = request.param
    return config


@pytest.fixture
async def new_bus(bus_backend: BackendConfig) -> AsyncIterator[BusFactory]:
    """Opens buses of the backend under test with options; closes them all afterwards."""
    opened: list[EventBus] = []

    async def open_(**options: Any) -> EventBus:
        bus = await bus_backend.open(**options)
        opened.append(bus)
        return bus

    yield open_
    for bus in opened:
        await bus.close()
