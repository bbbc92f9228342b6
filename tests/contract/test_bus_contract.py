"""The shipped event bus conformance suite (:mod:`agent_coordinator.testing.bus_contract`)
run against every backend in ``BACKENDS``: one test class per backend, its capability
flags taken from the backend's :class:`BackendConfig`.

To put a new backend through the suite, add its :class:`BackendConfig` to ``BACKENDS``
(mark it ``pytest.mark.services`` when it needs a running broker; set its capability
flags honestly -- a test for a capability a backend lacks is skipped, never rewritten
for it) and a class below. The suite's helpers are re-exported for the
backend-specific test modules.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest

from agent_coordinator.bus import EventBus, InMemoryBus
from agent_coordinator.testing.bus_contract import (
    WAIT,
    BusFactory,
    EventBusContract,
    Inbox,
    assert_each_once,
    ids,
    make_events,
    publish_all,
    unique,
)
from tests.contract.backend import BackendConfig
from tests.contract.backend_nats import NATS_BACKENDS
from tests.contract.backend_rabbitmq import RABBITMQ_BACKENDS

__all__ = ["BACKENDS", "WAIT", "Inbox", "assert_each_once", "ids", "make_events", "publish_all", "unique"]


async def _open_memory(**options: Any) -> EventBus:
    return InMemoryBus(**options)


async def _settle_memory(bus: EventBus) -> None:
    assert isinstance(bus, InMemoryBus)
    await bus.wait_idle(timeout=5.0)


BACKENDS: tuple[BackendConfig, ...] = (
    BackendConfig(name="memory", open=_open_memory, settle=_settle_memory),
    *RABBITMQ_BACKENDS,
    *NATS_BACKENDS,
)


class OnBackend(EventBusContract):
    """The suite on ``backend``: its flags, marks, factory and settle."""

    backend: ClassVar[BackendConfig]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        backend = cls.backend
        cls.supports_dead_letters = backend.supports_dead_letters
        cls.supports_duplicate_delivery_switch = backend.supports_duplicate_delivery_switch
        cls.fifo_per_group = backend.fifo_per_group
        cls.drains_on_close = backend.drains_on_close
        cls.pytestmark = list(backend.marks)  # type: ignore[attr-defined]

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        return self.backend.open

    async def settle(self, bus: EventBus) -> None:
        await self.backend.settle(bus)


def _backend(name: str) -> BackendConfig:
    (config,) = (c for c in BACKENDS if c.name == name)
    return config


class TestInMemoryBus(OnBackend):
    backend = _backend("memory")


class TestRabbitMQBus(OnBackend):
    backend = _backend("rabbitmq")


class TestJetStreamBus(OnBackend):
    backend = _backend("nats")


def test_loading_the_plugin_imports_neither_the_suites_nor_anything_heavy() -> None:
    """``-p agent_coordinator.testing`` stays cheap: a suite is imported only by a test module that imports it."""
    probe = (
        "import sys, agent_coordinator.testing; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langgraph', 'pydantic', 'psycopg', 'aio_pika', 'nats') "
        "or m.startswith('agent_coordinator.') and m not in ('agent_coordinator.testing', "
        "'agent_coordinator.testing.plugin'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
