"""The sandbox inventory service: a catalogue, stock levels and reservations.

Routes (mounted at ``/inventory`` by :class:`tools.sandbox.Sandbox`):

* ``POST /reservations {order_id, items: [{sku, quantity}]}`` -> 201
  ``{reservation_id, order_id, items, status: "held"}``; takes the stock of every
  item or of none. Unknown SKU or not enough stock -> 409 business refusal.
* ``POST /reservations/{reservation_id}/release`` -> 200
  ``{reservation_id, status: "released"}``; gives the stock back. Releasing again is
  a no-op with the same answer; an unknown id -> 404.
* ``GET /reservations[?order_id=...]`` -> ``{"reservations": [...]}``
* ``GET /catalogue`` -> ``{"items": [{sku, name, unit_price_cents, stock}]}`` (current stock)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tools.sandbox.idempotency import (
    Answer,
    EffectRequest,
    IdempotencyStore,
    ServiceCounters,
    business,
    derive_id,
    invalid,
    ok,
    parse_body,
    service_app,
)
from tools.sandbox.scenario import Scenario

__all__ = ["InventoryService", "Reservation", "ReservedItem"]


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class _ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1)
    items: list[_Line] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class ReservedItem:
    """A SKU and the quantity a reservation holds of it."""

    sku: str
    quantity: int


@dataclass(slots=True)
class Reservation:
    """Stock held for an order; ``status`` goes ``held`` -> ``released`` at most once."""

    reservation_id: str
    order_id: str
    items: tuple[ReservedItem, ...]
    status: Literal["held", "released"]
    idempotency_key: str

    def as_json(self) -> dict[str, Any]:
        """The reservation as the service answers it."""
        return {
            "reservation_id": self.reservation_id,
            "order_id": self.order_id,
            "items": [{"sku": i.sku, "quantity": i.quantity} for i in self.items],
            "status": self.status,
        }


class InventoryService:
    """State and ASGI app of the inventory service.

    ``stock`` maps each SKU to the units still available (held units excluded);
    ``reservations`` maps reservation id to :class:`Reservation`. Conservation holds
    at all times: for every SKU, ``stock + held == initial stock``.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.initial_stock: dict[str, int] = {sku: item.stock for sku, item in scenario.catalogue.items()}
        self.stock: dict[str, int] = dict(self.initial_stock)
        self.reservations: dict[str, Reservation] = {}
        self.store = IdempotencyStore("inventory", scenario)
        self.app = service_app(
            [
                Route("/reservations", self._post_reservation, methods=["POST"]),
                Route("/reservations", self._get_reservations, methods=["GET"]),
                Route("/reservations/{reservation_id}/release", self._post_release, methods=["POST"]),
                Route("/catalogue", self._get_catalogue, methods=["GET"]),
            ]
        )

    @property
    def counters(self) -> ServiceCounters:
        """Requests served and effects applied by this service."""
        return self.store.counters

    def held(self) -> dict[str, int]:
        """Units currently held by ``held`` reservations, per SKU."""
        with self.store.lock:
            totals: dict[str, int] = {}
            for reservation in self.reservations.values():
                if reservation.status == "held":
                    for item in reservation.items:
                        totals[item.sku] = totals.get(item.sku, 0) + item.quantity
            return totals

    # -- effects (run under the store's lock; no awaits) -----------------------------

    def _reserve(self, req: EffectRequest) -> Answer:
        parsed = parse_body(_ReservationRequest, req.body)
        wanted: dict[str, int] = {}
        for line in parsed.items:
            # Repeated SKUs are summed so the all-or-nothing check sees the real demand.
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        for sku, quantity in wanted.items():
            if sku not in self.stock:
                known = ", ".join(sorted(self.stock)[:20])
                return business(f"unknown SKU {sku!r}; known SKUs: {known}")
            if self.stock[sku] < quantity:
                return business(f"insufficient stock for {sku}: wanted {quantity}, available {self.stock[sku]}")
        for sku, quantity in wanted.items():
            self.stock[sku] -= quantity
        reservation = Reservation(
            reservation_id=derive_id("res_", req.key),
            order_id=parsed.order_id,
            items=tuple(ReservedItem(line.sku, line.quantity) for line in parsed.items),
            status="held",
            idempotency_key=req.key,
        )
        self.reservations[reservation.reservation_id] = reservation
        self.store.counters.effect(req.key)
        return ok(reservation.as_json(), status=201)

    def _release(self, req: EffectRequest) -> Answer:
        reservation_id = str(req.path_params["reservation_id"])
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            return invalid(f"no reservation {reservation_id!r}; check the id returned by reserve_stock", status=404)
        if reservation.status == "held":
            for item in reservation.items:
                self.stock[item.sku] += item.quantity
            reservation.status = "released"
            self.store.counters.effect(req.key)
        return ok({"reservation_id": reservation_id, "status": "released"})

    # -- routes ----------------------------------------------------------------------

    async def _post_reservation(self, request: Request) -> Response:
        return await self.store.effect(request, self._reserve)

    async def _post_release(self, request: Request) -> Response:
        return await self.store.effect(request, self._release)

    async def _get_reservations(self, request: Request) -> Response:
        def read(request: Request) -> Answer:
            order_id = request.query_params.get("order_id")
            found = [r.as_json() for r in self.reservations.values() if order_id is None or r.order_id == order_id]
            return ok({"reservations": found})

        return await self.store.read(request, read)

    async def _get_catalogue(self, request: Request) -> Response:
        def read(request: Request) -> Answer:
            items = [
                {"sku": sku, "name": item.name, "unit_price_cents": item.unit_price_cents, "stock": self.stock[sku]}
                for sku, item in self.scenario.catalogue.items()
            ]
            return ok({"items": items})

        return await self.store.read(request, read)
