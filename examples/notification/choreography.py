"""Choreography: a notifier joins the bus as its own consumer group and reacts to
``ShipmentScheduled``. No participant, event or workflow definition changes; the
event already carries the order and the shipment.

Run it next to a choreography on a broker (``coordinator run ... --mode
choreography --bus amqp://...``)::

    python -m examples.notification.choreography amqp://guest:guest@127.0.0.1:5672/

A notification that fails is redelivered and, at worst, dead-lettered; the order is
not affected.
"""

from __future__ import annotations

import asyncio
import sys

from agent_coordinator import Event
from agent_coordinator.bus import EventBus, Handler, Subscription, open_bus
from agent_coordinator.examples.notification.service import Notifications

GROUP = "order-fulfilment.notifier"


def notifier(service: Notifications) -> Handler:
    async def on_shipment_scheduled(event: Event) -> None:
        order, shipment = event.data["input"], event.data["result"]
        text = f"Order {order['order_id']} ships with {shipment['carrier']} in {shipment['eta_days']} days."
        service.send(event.id, order_id=order["order_id"], to=order["customer"], text=text)

    return on_shipment_scheduled


async def start_notifier(bus: EventBus, service: Notifications) -> Subscription:
    return await bus.subscribe(GROUP, ["ShipmentScheduled"], notifier(service))


async def serve(bus_url: str) -> None:
    bus = open_bus(bus_url)
    await start_notifier(bus, Notifications())
    try:
        await asyncio.Event().wait()
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else "memory://"))
