"""In-process sandbox HTTP services for orders: inventory, payment, shipping.

Deterministic fakes with real HTTP semantics (idempotency keys, business refusals,
injected 503s), for tests, examples and benchmarks::

    from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario

    sandbox = Sandbox(Scenario(transient_rate=0.1, seed=7))
    async with sandbox.client() as client:
        ...

Across processes: ``Sandbox(store="sandbox.db")`` keeps the state in a SQLite file
that outlives the process and may be shared by several (:mod:`agent_coordinator.examples.orders.sandbox.database`);
``python -m agent_coordinator.examples.orders.sandbox --store sandbox.db`` serves it over HTTP
(:mod:`agent_coordinator.examples.orders.sandbox.server`, needs uvicorn) and :class:`RemoteSandboxState` reads a
served one back for invariant checks.
"""

from __future__ import annotations

from agent_coordinator.examples.orders.sandbox.app import (
    SANDBOX_BASE_URL,
    InventoryState,
    OrderEffects,
    Sandbox,
    SandboxState,
)
from agent_coordinator.examples.orders.sandbox.idempotency import IDEMPOTENCY_HEADER, ServiceCounters
from agent_coordinator.examples.orders.sandbox.inventory import InventoryService, Reservation, ReservedItem
from agent_coordinator.examples.orders.sandbox.payment import Charge, PaymentService
from agent_coordinator.examples.orders.sandbox.remote import RemoteSandboxState
from agent_coordinator.examples.orders.sandbox.scenario import CatalogueItem, Scenario, default_catalogue
from agent_coordinator.examples.orders.sandbox.shipping import Shipment, ShippingService

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SANDBOX_BASE_URL",
    "CatalogueItem",
    "Charge",
    "InventoryService",
    "InventoryState",
    "OrderEffects",
    "PaymentService",
    "RemoteSandboxState",
    "Reservation",
    "ReservedItem",
    "Sandbox",
    "SandboxState",
    "Scenario",
    "ServiceCounters",
    "Shipment",
    "ShippingService",
    "default_catalogue",
]
