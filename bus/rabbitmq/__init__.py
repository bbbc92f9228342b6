"""The RabbitMQ event bus: :class:`RabbitMQBus`, the :mod:`agent_coordinator.bus.base`
contract on durable quorum queues (RabbitMQ 3.10 or later, no plugins; needs
``pip install 'agent-coordinator[rabbitmq]'``).

Open it with ``open_bus("amqp://user:pass@host/vhost")`` or :meth:`RabbitMQBus.from_url`;
it connects on first use. Delivery is at-least-once with publisher confirms and
manual acks; failed deliveries wait in delay queues, then go to a dead-letter queue.
The operator's guide -- topology, URL options, delivery limits, dead letters and
replay, what a broker restart does, versions tested -- is docs/brokers/rabbitmq.md.

Inside, as in every broker package: ``bus.py`` (the EventBus), ``topology.py`` (what
is declared), ``delivery.py`` (consume, settle, redeliver, dead-letter), ``errors.py``
(client errors into ``BusError``).
"""

from agent_coordinator.bus.base import MALFORMED_MESSAGE_TYPE
from agent_coordinator.bus.rabbitmq.bus import RabbitMQBus

# MALFORMED_MESSAGE_TYPE is bus.base's, shared by every backend; still importable from here.
__all__ = ["MALFORMED_MESSAGE_TYPE", "RabbitMQBus"]
