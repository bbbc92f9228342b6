"""The rabbitmq backend's entry in the bus contract suite (see conftest.BackendConfig).

Every bus the suite opens gets its own exchange and queue prefix (a fresh uuid), so
tests never see each other's messages on the shared broker, and deletes the queues
and exchange it declared when it is closed. Delays are shortened (20 ms base
backoff) to keep the suite fast; nothing waits on them by time.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import aio_pika
import pytest

from agent_coordinator.bus import EventBus
from agent_coordinator.bus.rabbitmq import RabbitMQBus
from tests.contract.backend import BackendConfig
from tests.services import RABBITMQ_URL, require_service

__all__ = ["RABBITMQ_BACKENDS", "DisposableRabbitMQBus", "open_rabbitmq_bus"]


class DisposableRabbitMQBus(RabbitMQBus):
    """A :class:`RabbitMQBus` that deletes its queues and exchange once closed."""

    async def close(self) -> None:
        first = not self._closed
        await super().close()
        if first:
            await self.delete_topology()

    async def delete_topology(self) -> None:
        """Delete every queue this bus declared and its exchange (best effort)."""
        if not self._declared:
            return  # never reached the broker
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            for queue in sorted(self._declared):
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.queue_delete(queue)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(self.exchange)
        finally:
            await connection.close()


async def open_rabbitmq_bus(**options: Any) -> DisposableRabbitMQBus:
    """A fresh bus on the local broker (skips the test when it is down), isolated
    by its own exchange and queue prefix unless ``options`` name them."""
    require_service("rabbitmq")
    run = uuid.uuid4().hex[:12]
    options.setdefault("exchange", f"test-{run}")
    options.setdefault("queue_prefix", f"test-{run}.")
    options.setdefault("redelivery_delay", 0.02)
    options.setdefault("close_timeout", 5.0)
    return DisposableRabbitMQBus(RABBITMQ_URL, **options)


async def _open(**options: Any) -> EventBus:
    return await open_rabbitmq_bus(**options)


async def _settle(bus: EventBus) -> None:
    assert isinstance(bus, RabbitMQBus)
    await bus.wait_idle(timeout=10.0)


RABBITMQ_BACKENDS: tuple[BackendConfig, ...] = (
    BackendConfig(
        name="rabbitmq",
        open=_open,
        settle=_settle,
        supports_duplicate_delivery_switch=True,  # publish() sends each event twice
        drains_on_close=False,  # unhandled events stay in the broker's durable queues
        marks=(pytest.mark.services,),
    ),
)
