"""The sandbox inventory service: a catalogue, stock levels and reservations.

Routes (mounted at ``/inventory`` by :class:`agent_coordinator.examples.orders.sandbox.Sandbox`):

* ``POST /reservations {order_id, items: [{sku, quantity}], currency?}`` -> 201
  ``{reservation_id, order_id, items: [{sku, quantity, unit_price_cents}],
  total_cents, currency, status: "held"}``; takes the stock of every item or of
  none, and prices it from the catalogue: the answer is what the order costs,
  whatever the order said. Unknown SKU, not enough stock, a ``currency`` other than
  the catalogue's, or a total above ``MAX_AMOUNT_CENTS`` -> 409 business refusal.
* ``POST /reservations/{reservation_id}/release`` -> 200
  ``{reservation_id, status: "released"}``; gives the stock back. Releasing again is
  a no-op with the same answer; an unknown id -> 404.
* ``GET /reservations[?order_id=...]`` -> ``{"reservations": [...]}`` (full records,
  with ``idempotency_key``; ``order_id`` may repeat)
* ``GET /catalogue`` -> ``{"currency": "EUR", "items": [{sku, name, unit_price_cents,
  stock, initial_stock, held}]}`` (``stock``: units available now; ``held``: units
  held by reservations, so stock conservation is checkable without every record)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_coordinator.examples.orders.sandbox.idempotency import (
    Answer,
    EffectRequest,
    Refused,
    business,
    ok,
    parse_body,
)
from agent_coordinator.examples.orders.sandbox.resource import Line, ResourceService, record_from_dict
from agent_coordinator.examples.orders.sandbox.scenario import MAX_AMOUNT_CENTS, Scenario

if TYPE_CHECKING:
    from agent_coordinator.examples.orders.sandbox.database import SandboxDatabase

__all__ = ["InventoryService", "Reservation", "ReservedItem", "units_held"]


class _ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=200)
    items: list[Line] = Field(min_length=1, max_length=1_000)
    # The currency the caller will pay in; None takes the catalogue's.
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class ReservedItem:
    """A SKU, the quantity a reservation holds of it and its catalogue unit price."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(slots=True)
class Reservation:
    """Stock held for an order at catalogue prices; ``status`` goes ``held`` ->
    ``released`` at most once. ``total_cents`` (in ``currency``) is what the order
    costs: the sum of quantity x unit price over ``items``."""

    reservation_id: str
    order_id: str
    items: tuple[ReservedItem, ...]
    total_cents: int
    currency: str
    status: Literal["held", "released"]
    idempotency_key: str

    def as_json(self) -> dict[str, Any]:
        """The reservation as the service answers it."""
        return {
            "reservation_id": self.reservation_id,
            "order_id": self.order_id,
            "items": [
                {"sku": i.sku, "quantity": i.quantity, "unit_price_cents": i.unit_price_cents} for i in self.items
            ],
            "total_cents": self.total_cents,
            "currency": self.currency,
            "status": self.status,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: :meth:`as_json` plus ``idempotency_key``."""
        return {**self.as_json(), "idempotency_key": self.idempotency_key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reservation:
        """The reservation :meth:`to_dict` gave ``data``."""
        items = tuple(ReservedItem(i["sku"], i["quantity"], i["unit_price_cents"]) for i in data["items"])
        return record_from_dict(cls, data, items=items)


def units_held(reservations: Iterable[Reservation]) -> dict[str, int]:
    """Units held by the ``held`` ones of ``reservations``, per SKU (the service's own
    count, and a client's over the records it fetched)."""
    totals: dict[str, int] = {}
    for reservation in reservations:
        if reservation.status == "held":
            for item in reservation.items:
                totals[item.sku] = totals.get(item.sku, 0) + item.quantity
    return totals


class InventoryService(ResourceService[Reservation]):
    """State and ASGI app of the inventory service.

    ``stock`` maps each SKU to the units still available (held units excluded);
    ``reservations`` maps reservation id to :class:`Reservation`. Conservation holds
    at all times: for every SKU, ``stock + held == initial stock``.
    """

    service = "inventory"
    noun = "reservation"
    id_prefix = "res_"
    create_tool = "reserve_stock"
    undo_verb = "release"
    active_status = "held"
    undone_status = "released"

    def __init__(self, scenario: Scenario, *, db: SandboxDatabase | None = None) -> None:
        self.initial_stock: dict[str, int] = {sku: item.stock for sku, item in scenario.catalogue.items()}
        self.stock: dict[str, int] = dict(self.initial_stock)
        super().__init__(scenario, db=db)

    @property
    def reservations(self) -> dict[str, Reservation]:
        """Reservation id -> :class:`Reservation` (the live records)."""
        return self.records

    @property
    def unit_prices(self) -> dict[str, int]:
        """The catalogue's unit price of each SKU, in cents of :attr:`currency`."""
        return {sku: item.unit_price_cents for sku, item in self.scenario.catalogue.items()}

    @property
    def currency(self) -> str:
        """The currency the catalogue prices in."""
        return self.scenario.currency

    def held(self) -> dict[str, int]:
        """Units currently held by ``held`` reservations, per SKU."""
        with self.store.lock:
            return self._held()

    def _held(self) -> dict[str, int]:
        return units_held(self.records.values())

    # -- the domain rule: all-or-nothing stock arithmetic ----------------------------

    def _new_record(self, req: EffectRequest, record_id: str) -> Reservation:
        parsed = parse_body(_ReservationRequest, req.body)
        currency = self.scenario.currency
        if parsed.currency is not None and parsed.currency != currency:
            raise Refused(business(f"the catalogue prices in {currency}, not {parsed.currency}; order in {currency}"))
        wanted: dict[str, int] = {}
        for line in parsed.items:
            # Repeated SKUs are summed so the all-or-nothing check sees the real demand.
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        if self.db is not None:  # another connection may have moved this stock
            self.stock.update(self.db.load_stock(wanted))
        for sku, quantity in wanted.items():
            if sku not in self.stock:
                known = ", ".join(sorted(self.stock)[:20])
                raise Refused(business(f"unknown SKU {sku!r}; known SKUs: {known}"))
            if self.stock[sku] < quantity:
                raise Refused(business(f"insufficient stock for {sku}: wanted {quantity}, available {self.stock[sku]}"))
        # The price is the catalogue's, never the caller's: this answer is what the order costs.
        prices = self.scenario.catalogue
        items = tuple(ReservedItem(line.sku, line.quantity, prices[line.sku].unit_price_cents) for line in parsed.items)
        total = sum(item.quantity * item.unit_price_cents for item in items)
        if total > MAX_AMOUNT_CENTS:
            raise Refused(
                business(
                    f"the order totals {total} cents at catalogue prices, more than the {MAX_AMOUNT_CENTS} "
                    "one reservation may hold; split the order"
                )
            )
        for sku, quantity in wanted.items():
            self.stock[sku] -= quantity
        return Reservation(
            reservation_id=record_id,
            order_id=parsed.order_id,
            items=items,
            total_cents=total,
            currency=currency,
            status="held",
            idempotency_key=req.key,
        )

    def _on_undo(self, record: Reservation) -> None:
        for item in record.items:
            self.stock[item.sku] += item.quantity

    # -- persistence -----------------------------------------------------------------

    def _record_from_dict(self, data: dict[str, Any]) -> Reservation:
        return Reservation.from_dict(data)

    def _refresh(self, db: SandboxDatabase, record_id: str) -> None:
        super()._refresh(db, record_id)
        record = self.records.get(record_id)
        if record is not None:  # and the stock an undo would give back
            self.stock.update(db.load_stock(item.sku for item in record.items))

    def _save(self, db: SandboxDatabase, record_id: str, record: Reservation, *, new: bool) -> None:
        super()._save(db, record_id, record, new=new)
        db.save_stock({item.sku: self.stock[item.sku] for item in record.items})

    def _load_state(self) -> None:
        super()._load_state()
        if self.db is not None:
            self.stock.update(self.initial_stock)
            self.stock.update(self.db.load_stock())

    # -- the catalogue ---------------------------------------------------------------

    def _extra_routes(self) -> Sequence[BaseRoute]:
        return [Route("/catalogue", self._get_catalogue, methods=["GET"])]

    def _catalogue(self, request: Request) -> Answer:
        held = self._held()  # already under the store's lock, as every read is
        items = [
            {
                "sku": sku,
                "name": item.name,
                "unit_price_cents": item.unit_price_cents,
                "stock": self.stock[sku],
                "initial_stock": self.initial_stock[sku],
                "held": held.get(sku, 0),
            }
            for sku, item in self.scenario.catalogue.items()
        ]
        return ok({"currency": self.scenario.currency, "items": items})

    async def _get_catalogue(self, request: Request) -> Response:
        return await self.store.read(request, self._catalogue)
