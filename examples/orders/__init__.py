"""The flagship: order fulfilment by an inventory, a payment and a shipping agent.

Everything order-specific lives in this folder -- the workflow and its agents
(:mod:`.app`), the order input and its tools (:mod:`.tools`), the sandbox services
they call (:mod:`.sandbox`), the money and stock invariants (:mod:`.invariants`), the
fault hooks (:mod:`.faults`), and the example inputs and cassettes -- so that the
generic code only ever talks to :data:`order_fulfilment_app`.
"""

from agent_coordinator.examples.orders.app import (
    ORDER_FULFILMENT,
    check_order_effects,
    order_agents,
    order_fulfilment_app,
)

__all__ = ["ORDER_FULFILMENT", "check_order_effects", "order_agents", "order_fulfilment_app"]
