"""Reading a sandbox served by another process, for invariant checks.

:meth:`RemoteSandboxState.fetch` GETs the three collections and the catalogue of a
served sandbox (``python -m tools.sandbox``) and rebuilds the same records, so a
check written against :class:`~tools.sandbox.app.Sandbox` -- ``effects_for``,
``inventory.stock`` / ``.initial_stock`` / ``.reservations`` / ``.unit_prices`` (the
:class:`~tools.sandbox.app.SandboxState` protocol) -- runs unchanged::

    async with httpx.AsyncClient() as client:
        state = await RemoteSandboxState.fetch(client, "http://127.0.0.1:8700")
    problems = check_order_effects(state, results)

It is a snapshot: fetch again to see later changes. The four GETs are not one
transaction, so fetch after the run has quiesced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tools.sandbox.app import OrderEffects
from tools.sandbox.inventory import Reservation
from tools.sandbox.payment import Charge
from tools.sandbox.shipping import Shipment

__all__ = ["RemoteInventory", "RemotePayment", "RemoteSandboxState", "RemoteShipping"]

T = TypeVar("T", Reservation, Charge, Shipment)


@dataclass(slots=True)
class RemoteInventory:
    """The inventory as fetched: reservations by id, available and initial stock and
    catalogue unit price by SKU, and the currency the catalogue prices in."""

    reservations: dict[str, Reservation] = field(default_factory=dict)
    stock: dict[str, int] = field(default_factory=dict)
    initial_stock: dict[str, int] = field(default_factory=dict)
    unit_prices: dict[str, int] = field(default_factory=dict)
    currency: str = "EUR"

    def held(self) -> dict[str, int]:
        """Units held by ``held`` reservations, per SKU."""
        totals: dict[str, int] = {}
        for reservation in self.reservations.values():
            if reservation.status == "held":
                for item in reservation.items:
                    totals[item.sku] = totals.get(item.sku, 0) + item.quantity
        return totals


@dataclass(slots=True)
class RemotePayment:
    """The charges as fetched, by id."""

    charges: dict[str, Charge] = field(default_factory=dict)


@dataclass(slots=True)
class RemoteShipping:
    """The shipments as fetched, by id."""

    shipments: dict[str, Shipment] = field(default_factory=dict)


@dataclass(slots=True)
class RemoteSandboxState:
    """A snapshot of a served sandbox's state, shaped like :class:`~tools.sandbox.app.Sandbox`."""

    inventory: RemoteInventory
    payment: RemotePayment
    shipping: RemoteShipping

    @classmethod
    async def fetch(cls, client: httpx.AsyncClient, base_url: str) -> RemoteSandboxState:
        """GET the state of the sandbox at ``base_url`` (e.g. ``http://127.0.0.1:8700``;
        ``http://sandbox`` with an in-process ``Sandbox.client()``).

        Raises ``httpx.HTTPStatusError`` for an error answer and ``httpx`` transport
        errors when the sandbox cannot be reached.
        """
        base = base_url.rstrip("/")
        catalogue = await _get(client, f"{base}/inventory/catalogue")
        inventory = RemoteInventory(
            reservations=await _records(client, f"{base}/inventory/reservations", Reservation.from_dict),
            stock={item["sku"]: item["stock"] for item in catalogue["items"]},
            initial_stock={item["sku"]: item["initial_stock"] for item in catalogue["items"]},
            unit_prices={item["sku"]: item["unit_price_cents"] for item in catalogue["items"]},
            currency=catalogue["currency"],
        )
        return cls(
            inventory=inventory,
            payment=RemotePayment(await _records(client, f"{base}/payment/charges", Charge.from_dict)),
            shipping=RemoteShipping(await _records(client, f"{base}/shipping/shipments", Shipment.from_dict)),
        )

    def effects_for(self, order_id: str) -> OrderEffects:
        """Every reservation, charge and shipment made for ``order_id``."""
        return OrderEffects(
            order_id=order_id,
            reservations=tuple(r for r in self.inventory.reservations.values() if r.order_id == order_id),
            charges=tuple(c for c in self.payment.charges.values() if c.order_id == order_id),
            shipments=tuple(s for s in self.shipping.shipments.values() if s.order_id == order_id),
        )


async def _get(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def _records(client: httpx.AsyncClient, url: str, from_dict: Callable[[dict[str, Any]], T]) -> dict[str, T]:
    # The collection is the last path segment ("reservations"); its id field is "<noun>_id".
    collection = url.rsplit("/", 1)[1]
    id_field = f"{collection[:-1]}_id"
    return {data[id_field]: from_dict(data) for data in (await _get(client, url))[collection]}
