"""The whole sandbox: three services behind one ASGI app, reachable in-process.

:class:`Sandbox` mounts the inventory, payment and shipping apps at ``/inventory``,
``/payment`` and ``/shipping`` and hands out ``httpx.AsyncClient`` s that call the
app in-process (``httpx.ASGITransport``; no sockets, no ports). Its state is plain
Python objects, exposed for invariant checks after a run; with ``store=`` it is also
kept in a SQLite file that outlives the process (:mod:`agent_coordinator.examples.orders.sandbox.database`), and
:mod:`agent_coordinator.examples.orders.sandbox.server` serves it over real HTTP to other processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
from starlette.routing import Mount

from agent_coordinator.examples.orders.sandbox.database import SandboxDatabase
from agent_coordinator.examples.orders.sandbox.idempotency import ServiceCounters, service_app
from agent_coordinator.examples.orders.sandbox.inventory import InventoryService, Reservation
from agent_coordinator.examples.orders.sandbox.payment import Charge, PaymentService
from agent_coordinator.examples.orders.sandbox.scenario import Scenario
from agent_coordinator.examples.orders.sandbox.shipping import Shipment, ShippingService

__all__ = ["SANDBOX_BASE_URL", "InventoryState", "OrderEffects", "Sandbox", "SandboxState"]

SANDBOX_BASE_URL = "http://sandbox"


@dataclass(frozen=True, slots=True)
class OrderEffects:
    """Everything the sandbox holds for one order (the live records, not copies)."""

    order_id: str
    reservations: tuple[Reservation, ...] = ()
    charges: tuple[Charge, ...] = ()
    shipments: tuple[Shipment, ...] = ()

    @property
    def outstanding(self) -> list[str]:
        """The effects still in force: held reservations, captured charges, scheduled
        shipments -- e.g. ``["reservation res_... held"]``. Empty after a full undo."""
        return [
            *(f"reservation {r.reservation_id} held" for r in self.reservations if r.status == "held"),
            *(f"charge {c.charge_id} captured" for c in self.charges if c.status == "captured"),
            *(f"shipment {s.shipment_id} scheduled" for s in self.shipments if s.status == "scheduled"),
        ]

    @property
    def counts(self) -> dict[str, int]:
        """Number of records per kind and status, e.g. ``{"reservation:held": 1}``."""
        counts: dict[str, int] = {}
        for kind, records in (
            ("reservation", self.reservations),
            ("charge", self.charges),
            ("shipment", self.shipments),
        ):
            for record in records:
                name = f"{kind}:{record.status}"
                counts[name] = counts.get(name, 0) + 1
        return counts


class InventoryState(Protocol):
    """What invariant checks read of the inventory (:class:`InventoryService`, or
    :class:`~agent_coordinator.examples.orders.sandbox.remote.RemoteSandboxState`'s copy)."""

    @property
    def reservations(self) -> Mapping[str, Reservation]: ...
    @property
    def stock(self) -> Mapping[str, int]: ...
    @property
    def initial_stock(self) -> Mapping[str, int]: ...
    @property
    def unit_prices(self) -> Mapping[str, int]: ...
    @property
    def currency(self) -> str: ...
    def held(self) -> dict[str, int]: ...


class SandboxState(Protocol):
    """What invariant checks (e.g. ``agent_coordinator.examples.orders.app.check_order_effects``) read of a
    sandbox: a :class:`Sandbox`, or a :class:`~agent_coordinator.examples.orders.sandbox.remote.RemoteSandboxState`
    fetched from a served one."""

    @property
    def inventory(self) -> InventoryState: ...
    def effects_for(self, order_id: str) -> OrderEffects: ...


class Sandbox:
    """The inventory, payment and shipping services for one run, sharing a scenario.

    ``Sandbox()`` uses :meth:`Scenario.default`. Use :meth:`client` to call it::

        sandbox = Sandbox()
        async with sandbox.client() as client:
            await client.get("/inventory/catalogue")

    State for checks: ``sandbox.inventory.stock`` / ``.reservations``,
    ``sandbox.payment.charges``, ``sandbox.shipping.shipments``,
    :meth:`effects_for` and :attr:`counters`.

    ``store`` (a file path) keeps the state in a SQLite file as well: every change is
    written before its answer is sent, and a ``Sandbox`` opened later on the same file
    -- in this process or another -- starts from it (same ids, stock, stored
    idempotency answers and attempt counts). Several ``Sandbox`` objects, in any
    number of processes, may write one file at once; each sees the others' changes
    for the rows a request touches, and all of them after :meth:`reload` (see
    :mod:`agent_coordinator.examples.orders.sandbox.database`). A new file records ``scenario`` (default:
    :meth:`Scenario.default`); an existing one keeps its own: ``scenario=None`` adopts
    it, a different ``scenario`` raises :class:`~agent_coordinator.core.errors.InvalidInput`
    naming the file. Close a stored sandbox with :meth:`close` (or ``with``).
    """

    def __init__(self, scenario: Scenario | None = None, *, store: str | Path | None = None) -> None:
        self.db = SandboxDatabase(store, scenario) if store is not None else None
        if self.db is not None:
            self.scenario = self.db.scenario
        else:
            self.scenario = scenario if scenario is not None else Scenario.default()
        self.inventory = InventoryService(self.scenario, db=self.db)
        self.payment = PaymentService(self.scenario, db=self.db)
        self.shipping = ShippingService(self.scenario, db=self.db)
        self.app = service_app(
            [
                Mount("/inventory", app=self.inventory.app),
                Mount("/payment", app=self.payment.app),
                Mount("/shipping", app=self.shipping.app),
            ]
        )

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` wired to this sandbox in-process, with base URL
        ``http://sandbox`` (so service URLs are ``http://sandbox/inventory`` etc.).

        ``kwargs`` go to ``httpx.AsyncClient`` (e.g. ``timeout``); ``base_url`` may be
        overridden, ``transport`` may not. Close it (``async with``) when done.
        """
        if "transport" in kwargs:
            raise TypeError("Sandbox.client() sets its own transport; do not pass transport=")
        kwargs.setdefault("base_url", SANDBOX_BASE_URL)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), **kwargs)

    @property
    def store_path(self) -> Path | None:
        """The store file, or ``None`` for a sandbox held in memory only."""
        return self.db.path if self.db is not None else None

    def reload(self) -> None:
        """Take every service's state from the store, including what other ``Sandbox``
        objects on the file wrote (no-op without a store). Durable counters become the
        file's totals; see :meth:`~agent_coordinator.examples.orders.sandbox.idempotency.IdempotencyStore.load`."""
        for service in (self.inventory, self.payment, self.shipping):
            service.store.load()

    def close(self) -> None:
        """Close the store file (no-op without one). The sandbox must not serve
        effectful requests afterwards."""
        if self.db is not None:
            self.db.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def counters(self) -> dict[str, ServiceCounters]:
        """Per-service request and effect counters, keyed ``inventory``, ``payment``, ``shipping``."""
        return {
            "inventory": self.inventory.counters,
            "payment": self.payment.counters,
            "shipping": self.shipping.counters,
        }

    @property
    def request_counts(self) -> dict[str, int]:
        """HTTP requests answered per service."""
        return {name: counters.requests for name, counters in self.counters.items()}

    @property
    def effect_counts(self) -> dict[str, int]:
        """State changes applied per service."""
        return {name: counters.effects for name, counters in self.counters.items()}

    def effects_for(self, order_id: str) -> OrderEffects:
        """Every reservation, charge and shipment made for ``order_id``."""
        return OrderEffects(
            order_id=order_id,
            reservations=self.inventory.for_order(order_id),
            charges=self.payment.for_order(order_id),
            shipments=self.shipping.for_order(order_id),
        )
