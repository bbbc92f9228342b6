"""The sandbox shipping service: shipments and their cancellation.

Routes (mounted at ``/shipping`` by :class:`tools.sandbox.Sandbox`):

* ``POST /shipments {order_id, address: {name, line1, city, postcode, country}, items}``
  -> 201 ``{shipment_id, order_id, status: "scheduled", carrier, eta_days}``. A
  country the scenario lists as unshippable -> 409 business refusal.
* ``POST /shipments/{shipment_id}/cancel`` -> 200 ``{shipment_id, status: "cancelled"}``;
  cancelling again is a no-op with the same answer; unknown id -> 404.
* ``GET /shipments[?order_id=...]`` -> ``{"shipments": [...]}``
"""

from __future__ import annotations

import hashlib
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

__all__ = ["CARRIERS", "Shipment", "ShippingService"]

#: Carriers a shipment may be given; the choice is a hash of the idempotency key.
CARRIERS = ("DHL", "UPS", "DPD", "PostNL")


class _Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    line1: str = Field(min_length=1)
    city: str = Field(min_length=1)
    postcode: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class _ShipmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1)
    address: _Address
    items: list[_Line] = Field(min_length=1)


@dataclass(slots=True)
class Shipment:
    """A scheduled delivery; ``status`` goes ``scheduled`` -> ``cancelled`` at most once."""

    shipment_id: str
    order_id: str
    country: str
    items: tuple[tuple[str, int], ...]
    carrier: str
    eta_days: int
    status: Literal["scheduled", "cancelled"]
    idempotency_key: str

    def as_json(self) -> dict[str, Any]:
        """The shipment as the service answers it."""
        return {
            "shipment_id": self.shipment_id,
            "order_id": self.order_id,
            "status": self.status,
            "carrier": self.carrier,
            "eta_days": self.eta_days,
        }


class ShippingService:
    """State and ASGI app of the shipping service; ``shipments`` maps id to :class:`Shipment`."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.shipments: dict[str, Shipment] = {}
        self.store = IdempotencyStore("shipping", scenario)
        self.app = service_app(
            [
                Route("/shipments", self._post_shipment, methods=["POST"]),
                Route("/shipments", self._get_shipments, methods=["GET"]),
                Route("/shipments/{shipment_id}/cancel", self._post_cancel, methods=["POST"]),
            ]
        )

    @property
    def counters(self) -> ServiceCounters:
        """Requests served and effects applied by this service."""
        return self.store.counters

    # -- effects (run under the store's lock; no awaits) -----------------------------

    def _schedule(self, req: EffectRequest) -> Answer:
        parsed = parse_body(_ShipmentRequest, req.body)
        country = parsed.address.country
        if country in self.scenario.unshippable_countries:
            return business(f"cannot ship to country {country}")
        pick = hashlib.blake2b(req.key.encode(), digest_size=2).digest()
        shipment = Shipment(
            shipment_id=derive_id("shp_", req.key),
            order_id=parsed.order_id,
            country=country,
            items=tuple((line.sku, line.quantity) for line in parsed.items),
            carrier=CARRIERS[pick[0] % len(CARRIERS)],
            eta_days=1 + pick[1] % 5,
            status="scheduled",
            idempotency_key=req.key,
        )
        self.shipments[shipment.shipment_id] = shipment
        self.store.counters.effect(req.key)
        return ok(shipment.as_json(), status=201)

    def _cancel(self, req: EffectRequest) -> Answer:
        shipment_id = str(req.path_params["shipment_id"])
        shipment = self.shipments.get(shipment_id)
        if shipment is None:
            return invalid(f"no shipment {shipment_id!r}; check the id returned by schedule_shipment", status=404)
        if shipment.status == "scheduled":
            shipment.status = "cancelled"
            self.store.counters.effect(req.key)
        return ok({"shipment_id": shipment_id, "status": "cancelled"})

    # -- routes ----------------------------------------------------------------------

    async def _post_shipment(self, request: Request) -> Response:
        return await self.store.effect(request, self._schedule)

    async def _post_cancel(self, request: Request) -> Response:
        return await self.store.effect(request, self._cancel)

    async def _get_shipments(self, request: Request) -> Response:
        def read(request: Request) -> Answer:
            order_id = request.query_params.get("order_id")
            found = [s.as_json() for s in self.shipments.values() if order_id is None or s.order_id == order_id]
            return ok({"shipments": found})

        return await self.store.read(request, read)
