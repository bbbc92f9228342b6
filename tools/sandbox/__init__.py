"""In-process sandbox HTTP services for orders: inventory, payment, shipping.

Deterministic fakes with real HTTP semantics (idempotency keys, business refusals,
injected 503s), for tests, examples and benchmarks::

    from tools.sandbox import Sandbox, Scenario

    sandbox = Sandbox(Scenario(transient_rate=0.1, seed=7))
    async with sandbox.client() as client:
        ...

Across processes: ``Sandbox(store="sandbox.db")`` keeps the state in a SQLite file
that outlives the process and may be shared by several (:mod:`tools.sandbox.database`);
``python -m tools.sandbox --store sandbox.db`` serves it over HTTP
(:mod:`tools.sandbox.server`, needs uvicorn) and :class:`RemoteSandboxState` reads a
served one back for invariant checks.
"""

from __future__ import annotations

from tools.sandbox.app import SANDBOX_BASE_URL, InventoryState, OrderEffects, Sandbox, SandboxState
from tools.sandbox.idempotency import IDEMPOTENCY_HEADER, ServiceCounters
from tools.sandbox.inventory import InventoryService, Reservation, ReservedItem
from tools.sandbox.payment import Charge, PaymentService
from tools.sandbox.remote import RemoteSandboxState
from tools.sandbox.scenario import CatalogueItem, Scenario, default_catalogue
from tools.sandbox.shipping import Shipment, ShippingService

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
