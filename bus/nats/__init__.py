"""The NATS JetStream event bus: :class:`JetStreamBus`, the :mod:`agent_coordinator.bus.base`
contract on JetStream streams and durable pull consumers (NATS 2.9 or later; needs
``pip install 'agent-coordinator[nats]'``).

Open it with ``open_bus("nats://host:4222")`` or :meth:`JetStreamBus.from_url`; it
connects on first use (or at :meth:`JetStreamBus.connect`). It passes the contract
suite with ``drains_on_close=False``: what a closing bus has not handled stays in
JetStream for the next member of its group. The operator's guide -- topology, URL
options, delivery limits, dead letters and replay, what a server restart does,
versions tested, known limits -- is docs/brokers/nats.md.

Inside, as in every broker package: ``bus.py`` (the EventBus), ``topology.py`` (what
is created), ``delivery.py`` (pull, settle, redeliver, dead-letter), ``errors.py``
(client errors into ``BusError``).
"""

from agent_coordinator.bus.nats.bus import JetStreamBus

__all__ = ["JetStreamBus"]
