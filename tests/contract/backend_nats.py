"""The nats backend's entry in the bus contract suite (see conftest.BackendConfig).

Every bus gets a stream and subject prefix of its own (a uuid), so tests never see
each other's events on the shared server, and deletes both streams when it closes.
The redelivery backoff defaults to 50 ms here (0.5 s in production) so the
redelivery tests stay fast; a test that passes ``redelivery_delay`` gets its own.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agent_coordinator.bus import EventBus
from tests.contract.backend import BackendConfig
from tests.services import NATS_URL, require_service

if TYPE_CHECKING:
    from agent_coordinator.bus.nats import JetStreamBus

__all__ = ["NATS_BACKENDS", "open_throwaway_jetstream_bus"]


async def open_throwaway_jetstream_bus(**options: Any) -> JetStreamBus:
    """A connected :class:`JetStreamBus` on fresh streams that are deleted on close.

    Skips the test (or fails it under ``REQUIRE_SERVICES=1``) when NATS is down.
    ``stream`` and ``subject_prefix`` may be passed to reopen an earlier bus's streams.
    """
    require_service("nats")
    import nats  # imported late: nats-py is an optional extra
    import nats.errors

    from agent_coordinator.bus.nats import JetStreamBus

    class ThrowawayJetStreamBus(JetStreamBus):
        _streams_deleted = False

        async def close(self) -> None:
            await super().close()
            if self._streams_deleted:
                return
            self._streams_deleted = True
            nc = await nats.connect(NATS_URL)
            try:
                js = nc.jetstream()
                for name in (self.stream, self.dlq_stream):
                    with contextlib.suppress(nats.errors.Error):
                        await js.delete_stream(name)
            finally:
                await nc.close()

    suffix = uuid.uuid4().hex[:12]
    options.setdefault("stream", f"CONTRACT_{suffix}")
    options.setdefault("subject_prefix", f"contract-{suffix}")
    options.setdefault("redelivery_delay", 0.05)
    bus = ThrowawayJetStreamBus(NATS_URL, **options)
    await bus.connect()
    return bus


async def _open_nats(**options: Any) -> EventBus:
    return await open_throwaway_jetstream_bus(**options)


async def _settle_nats(bus: EventBus) -> None:
    from agent_coordinator.bus.nats import JetStreamBus

    assert isinstance(bus, JetStreamBus)
    await bus.wait_idle(timeout=5.0)


NATS_BACKENDS: tuple[BackendConfig, ...] = (
    BackendConfig(
        name="nats",
        open=_open_nats,
        settle=_settle_nats,
        supports_duplicate_delivery_switch=False,
        # FIFO per group holds for one event type; on NATS 2.9 (one consumer per
        # subject) not across the types of a group -- see bus.nats.
        fifo_per_group=True,
        drains_on_close=False,
        marks=(pytest.mark.services,),
    ),
)
