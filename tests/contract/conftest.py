"""Backends the bus contract suite runs against, and the fixtures that open them.

To put a new backend through the suite, append one :class:`BackendConfig` to
``BACKENDS`` (mark it ``pytest.mark.services`` when it needs a running broker) and
set its capability flags honestly: a test for a capability a backend lacks is
skipped, never rewritten for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_coordinator.bus import EventBus, InMemoryBus
from tests.contract.backend import BackendConfig, BusFactory

__all__ = ["BACKENDS", "BackendConfig", "BusFactory"]


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
