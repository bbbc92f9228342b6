"""How the RabbitMQ bus turns aio-pika, aiormq, pamqp and socket errors into
:class:`~agent_coordinator.core.errors.BusError`: naming the broker (``host:port``
and vhost, never the password), what failed and what to check.

Every conversation with the broker is bounded (``OPERATION_TIMEOUT``): aio-pika
waits for a reconnecting connection without limit, and a broker under a memory or
disk alarm blocks publishers indefinitely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import aiormq
import pamqp.exceptions

from agent_coordinator.bus.broker import redact
from agent_coordinator.core.errors import BusError

__all__ = ["BROKER_EXCEPTIONS", "OPERATION_TIMEOUT", "best_effort", "broker_errors"]

OPERATION_TIMEOUT: Final = 30.0  # any single exchange with the broker
_CLEANUP_TIMEOUT: Final = 5.0  # best-effort cancels and closes on the way out

# Everything aio-pika, aiormq, pamqp or the socket layer raise for a broker problem.
BROKER_EXCEPTIONS: Final = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aio-pika raises it for a connection or channel already closed
)


@contextlib.asynccontextmanager
async def broker_errors(action: str, *, where: str, password: str) -> AsyncIterator[None]:
    """Bound a conversation with the broker by ``OPERATION_TIMEOUT`` and translate
    aio-pika/aiormq/socket errors into :class:`BusError`: "RabbitMQ bus could not
    ``action``", the client's reason (``password`` masked), the broker ``where`` and
    what to check. A ``BusError`` raised inside passes unchanged."""
    try:
        async with asyncio.timeout(OPERATION_TIMEOUT):
            yield
    except BusError:
        raise
    except BROKER_EXCEPTIONS as exc:
        if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError):
            reason = "the channel is closed: the connection was lost or the bus is closing"
        else:
            reason = str(exc) or type(exc).__name__
        raise BusError(
            f"RabbitMQ bus could not {action}: {type(exc).__name__}: {redact(reason, password)} (broker {where});"
            f" {_hint(exc)}"
        ) from exc


@contextlib.asynccontextmanager
async def best_effort() -> AsyncIterator[None]:
    """For cleanup on the way out (cancel a consumer, close a channel): bounded, and
    quiet about a broker that is gone -- the broker requeues what we held anyway."""
    with contextlib.suppress(*BROKER_EXCEPTIONS):
        async with asyncio.timeout(_CLEANUP_TIMEOUT):
            yield


def _hint(exc: BaseException) -> str:
    """What to check, by failure."""
    """What to check, by failure."""
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
        return "check the user name and password in the bus URL"
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return (
            "a queue or exchange of that name exists with other settings; delete it"
            " (rabbitmqctl delete_queue NAME) or use another exchange/queue_prefix"
        )
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return "the user lacks permission on this vhost (rabbitmqctl set_permissions)"
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return "a queue or exchange was deleted on the broker; subscribe the group again to re-declare it"
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return "the broker refused the message (nack): check its log for alarms (disk or memory) and queue limits"
    if isinstance(exc, aiormq.exceptions.InvalidFrameError):
        return "check that the vhost in the URL exists and the user may use it (rabbitmqctl list_vhosts)"
    if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError | aiormq.exceptions.ConnectionClosed):
        return "the bus reconnects on its own (robust connection): retry shortly; if it persists, check the broker"
    if isinstance(exc, TimeoutError):
        return (
            f"the broker did not answer within {OPERATION_TIMEOUT:.0f}s: check that it is running and not"
            " blocked by a memory or disk alarm (rabbitmqctl status lists alarms); the call may be retried"
        )
    return (
        "check that RabbitMQ is running and reachable there (rabbitmqctl status; start it with"
        " rabbitmq-server -detached) and the URL's host and port; the call may be retried"
    )
