"""Reading a sandbox served by another process, for invariant checks.

:meth:`RemoteSandboxState.fetch` GETs the three collections and the catalogue of a
served sandbox (``python -m agent_coordinator.examples.orders.sandbox``) and rebuilds the same records, so a
check written against :class:`~agent_coordinator.examples.orders.sandbox.app.Sandbox` -- ``effects_for``,
``inventory.stock`` / ``.initial_stock`` / ``.reservations`` / ``.unit_prices`` (the
:class:`~agent_coordinator.examples.orders.sandbox.app.SandboxState` protocol) -- runs unchanged::

    async with httpx.AsyncClient() as client:
        state = await RemoteSandboxState.fetch(client, "http://127.0.0.1:8700")
    problems = check_order_effects(state, results)

It is a snapshot: fetch again to see later changes. The four GETs are not one
transaction, so fetch after the run has quiesced.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from agent_coordinator.examples.orders.sandbox.app import OrderEffects
from agent_coordinator.examples.orders.sandbox.inventory import Reservation, units_held
from agent_coordinator.examples.orders.sandbox.payment import Charge
from agent_coordinator.examples.orders.sandbox.shipping import Shipment

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
    #: Units held per SKU as the service counted them (all reservations, even when
    #: only some orders' records were fetched).
    held_by_sku: dict[str, int] | None = None

    def held(self) -> dict[str, int]:
        """Units held by ``held`` reservations, per SKU."""
        if self.held_by_sku is not None:
            return {sku: units for sku, units in self.held_by_sku.items() if units}
        return units_held(self.reservations.values())


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
    """A snapshot of a served sandbox's state, shaped like
    :class:`~agent_coordinator.examples.orders.sandbox.app.Sandbox`."""

    inventory: RemoteInventory
    payment: RemotePayment
    shipping: RemoteShipping
    _by_order: dict[str, OrderEffects] = field(default_factory=dict)

    @classmethod
    async def fetch(
        cls, client: httpx.AsyncClient, base_url: str, *, order_ids: Collection[str] | None = None
    ) -> RemoteSandboxState:
        """GET the state of the sandbox at ``base_url`` (e.g. ``http://127.0.0.1:8700``;
        ``http://sandbox`` with an in-process ``Sandbox.client()``).

        ``order_ids`` limits the records fetched to those orders' (the catalogue, with
        stock and units held, is always whole): checking a batch in chunks then costs
        each chunk its own size, not the size of everything the services hold.

        Raises ``httpx.HTTPStatusError`` for an error answer and ``httpx`` transport
        errors when the sandbox cannot be reached.
        """
        base = base_url.rstrip("/")
        catalogue = await _get(client, f"{base}/inventory/catalogue")
        wanted = None if order_ids is None else sorted(set(order_ids))
        inventory = RemoteInventory(
            reservations=await _records(client, f"{base}/inventory/reservations", Reservation.from_dict, wanted),
            stock={item["sku"]: item["stock"] for item in catalogue["items"]},
            initial_stock={item["sku"]: item["initial_stock"] for item in catalogue["items"]},
            unit_prices={item["sku"]: item["unit_price_cents"] for item in catalogue["items"]},
            currency=catalogue["currency"],
            held_by_sku={item["sku"]: item["held"] for item in catalogue["items"]} if wanted is not None else None,
        )
        state = cls(
            inventory=inventory,
            payment=RemotePayment(await _records(client, f"{base}/payment/charges", Charge.from_dict, wanted)),
            shipping=RemoteShipping(await _records(client, f"{base}/shipping/shipments", Shipment.from_dict, wanted)),
        )
        state._index()
        return state

    def _index(self) -> None:
        reservations: dict[str, list[Reservation]] = {}
        charges: dict[str, list[Charge]] = {}
        shipments: dict[str, list[Shipment]] = {}
        for reservation in self.inventory.reservations.values():
            reservations.setdefault(reservation.order_id, []).append(reservation)
        for charge in self.payment.charges.values():
            charges.setdefault(charge.order_id, []).append(charge)
        for shipment in self.shipping.shipments.values():
            shipments.setdefault(shipment.order_id, []).append(shipment)
        for order_id in {*reservations, *charges, *shipments}:
            self._by_order[order_id] = OrderEffects(
                order_id=order_id,
                reservations=tuple(reservations.get(order_id, ())),
                charges=tuple(charges.get(order_id, ())),
                shipments=tuple(shipments.get(order_id, ())),
            )

    def effects_for(self, order_id: str) -> OrderEffects:
        """Every reservation, charge and shipment made for ``order_id``."""
        return self._by_order.get(order_id) or OrderEffects(order_id=order_id)


#: Orders asked for per request when fetching some orders' records (keeps URLs short).
_IDS_PER_REQUEST = 100


async def _get(client: httpx.AsyncClient, url: str, params: Any = None) -> dict[str, Any]:
    response = await client.get(url, params=params)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def _records(
    client: httpx.AsyncClient, url: str, from_dict: Callable[[dict[str, Any]], T], order_ids: list[str] | None
) -> dict[str, T]:
    # The collection is the last path segment ("reservations"); its id field is "<noun>_id".
    collection = url.rsplit("/", 1)[1]
    id_field = f"{collection[:-1]}_id"
    if order_ids is None:
        return {data[id_field]: from_dict(data) for data in (await _get(client, url))[collection]}
    found: dict[str, T] = {}
    for start in range(0, len(order_ids), _IDS_PER_REQUEST):
        params = [("order_id", order_id) for order_id in order_ids[start : start + _IDS_PER_REQUEST]]
        for data in (await _get(client, url, params))[collection]:
            found[data[id_field]] = from_dict(data)
    return found
