"""In-process sandbox HTTP services for orders: inventory, payment, shipping.

Deterministic fakes with real HTTP semantics (idempotency keys, business refusals,
injected 503s), for tests, examples and benchmarks::

    from tools.sandbox import Sandbox, Scenario

    sandbox = Sandbox(Scenario(transient_rate=0.1, seed=7))
    async with sandbox.client() as client:
        ...
"""

from __future__ import annotations

from tools.sandbox.app import SANDBOX_BASE_URL, OrderEffects, Sandbox
from tools.sandbox.idempotency import IDEMPOTENCY_HEADER, ServiceCounters
from tools.sandbox.inventory import InventoryService, Reservation, ReservedItem
from tools.sandbox.payment import Charge, PaymentService
from tools.sandbox.scenario import CatalogueItem, Scenario, default_catalogue
from tools.sandbox.shipping import Shipment, ShippingService

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SANDBOX_BASE_URL",
    "CatalogueItem",
    "Charge",
    "InventoryService",
    "OrderEffects",
    "PaymentService",
    "Reservation",
    "ReservedItem",
    "Sandbox",
    "Scenario",
    "ServiceCounters",
    "Shipment",
    "ShippingService",
    "default_catalogue",
]
