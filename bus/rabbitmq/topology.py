"""What the RabbitMQ bus declares on the broker, and what it knows of each group.

The names and arguments of the exchange, the group queues, their delay queues and
the dead-letter queue; the rules on group names and event types that follow from
them. docs/brokers/rabbitmq.md ("Topology") explains the choices.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, Final

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustChannel

if TYPE_CHECKING:
    from agent_coordinator.bus.rabbitmq.delivery import Member

__all__ = [
    "BROKER_DELIVERY_LIMIT",
    "DEAD_LETTER_QUEUE",
    "Group",
    "check_group",
    "declare_exchange_and_dead_letter_queue",
    "declare_group_queue",
    "declare_retry_queue",
    "queued_on_broker",
    "retry_queue_name",
]

DEAD_LETTER_QUEUE: Final = "dead-letters"  # after the queue prefix; so not a valid group name
# Broker-level returns of one message (consumers dying mid-handler) before the broker
# dead-letters it: RabbitMQ 4.x's default, stated so that 3.x behaves the same.
BROKER_DELIVERY_LIMIT: Final = 20


class Group:
    """What this bus knows about one consumer group.

    ``unsettled`` counts the deliveries this bus put into the group (by publishing,
    redelivering or replaying) and has not yet seen acked or dead-lettered; it is what
    ``wait_idle`` waits on, because the broker's queue depth does not show a message
    that is on the wire or between a delay queue and the group's queue.
    """

    __slots__ = ("in_flight", "members", "name", "queue", "retry_queues", "types", "unsettled")

    def __init__(self, name: str, queue: str) -> None:
        self.name = name
        self.queue = queue
        self.types: set[str] = set()
        self.members: set[Member] = set()
        self.retry_queues: set[str] = set()
        self.unsettled = 0
        self.in_flight = 0

    def describe(self) -> str:
        return (
            f"group {self.name!r} (queue {self.queue!r}): {self.unsettled} unsettled,"
            f" {self.in_flight} in flight, {len(self.members)} member(s) here"
        )


def check_group(group: str, types: Collection[str]) -> None:
    """``ValueError`` for the reserved group name and for types holding a topic
    wildcard (RabbitMQ would match them as patterns)."""
    if group == DEAD_LETTER_QUEUE:
        raise ValueError(f"{group!r} is reserved for the RabbitMQ bus's dead-letter queue; pick another group name")
    wildcards = sorted(t for t in types if "*" in t or "#" in t)
    if wildcards:
        raise ValueError(
            f"event types {wildcards} of group {group!r} contain a topic wildcard (* or #), which RabbitMQ"
            " would match as a pattern; name each type exactly"
        )


async def declare_exchange_and_dead_letter_queue(
    publisher: AbstractRobustChannel, topology: AbstractRobustChannel, exchange: str, dead_letter_queue: str
) -> AbstractExchange:
    """The durable topic exchange events are published to (on the publishing channel)
    and the classic dead-letter queue (classic: reading it takes and requeues every
    message, which a classic queue puts back in place and does not count)."""
    declared = await publisher.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    await topology.declare_queue(dead_letter_queue, durable=True, arguments={"x-queue-type": "classic"})
    return declared


async def declare_group_queue(
    channel: AbstractRobustChannel, queue: str, *, exchange: str, types: Iterable[str], dead_letter_queue: str
) -> aio_pika.abc.AbstractQueue:
    """The group's quorum queue, bound to ``exchange`` with each of ``types``."""
    # Identical for every group and every bus sharing queue_prefix: RabbitMQ refuses
    # to re-declare a queue with other arguments.
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": BROKER_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue,
        # at-least-once dead-lettering (3.10+) needs reject-publish overflow.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
    for type_ in sorted(types):
        await declared.bind(exchange, routing_key=type_)
    return declared


def retry_queue_name(queue: str, delay_ms: int) -> str:
    # The delay is in the name, so buses configured with different redelivery_delay
    # never disagree about a queue's arguments.
    return f"{queue}.retry.{delay_ms}ms"


async def declare_retry_queue(channel: AbstractRobustChannel, name: str, *, delay_ms: int, group_queue: str) -> None:
    """A delay queue: its messages wait ``delay_ms`` (the message TTL) and are then
    dead-lettered by the broker back into ``group_queue`` -- no plugin needed, and no
    head-of-line blocking, since every message in one queue has the same TTL."""
    await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": group_queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


async def queued_on_broker(channel: AbstractChannel, groups: Iterable[Group]) -> bool:
    """Whether any queue of ``groups`` (group queues and their delay queues) holds
    ready messages: a passive declare per queue."""
    underlay = await channel.get_underlay_channel()
    for group in groups:
        for queue in (group.queue, *group.retry_queues):
            declared = await underlay.queue_declare(queue, passive=True)
            if declared.message_count:
                return True
    return False
