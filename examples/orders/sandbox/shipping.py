"""The sandbox shipping service: shipments and their cancellation.

Routes (mounted at ``/shipping`` by :class:`agent_coordinator.examples.orders.sandbox.Sandbox`):

* ``POST /shipments {order_id, address: {name, line1, city, postcode, country}, items}``
  -> 201 ``{shipment_id, order_id, status: "scheduled", carrier, eta_days}``. A
  country the scenario lists as unshippable -> 409 business refusal.
* ``POST /shipments/{shipment_id}/cancel`` -> 200 ``{shipment_id, status: "cancelled"}``;
  cancelling again is a no-op with the same answer; unknown id -> 404.
* ``GET /shipments[?order_id=...]`` -> ``{"shipments": [...]}`` (full records, with
  ``country``, ``items`` and ``idempotency_key``)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_coordinator.examples.orders.sandbox.idempotency import EffectRequest, Refused, business, parse_body
from agent_coordinator.examples.orders.sandbox.resource import Line, ResourceService, record_from_dict

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


class _ShipmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1)
    address: _Address
    items: list[Line] = Field(min_length=1)


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

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: :meth:`as_json` plus ``country``, ``items``
        (``[{sku, quantity}]``) and ``idempotency_key``."""
        return {
            **self.as_json(),
            "country": self.country,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in self.items],
            "idempotency_key": self.idempotency_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shipment:
        """The shipment :meth:`to_dict` gave ``data``."""
        return record_from_dict(cls, data, items=tuple((i["sku"], i["quantity"]) for i in data["items"]))


class ShippingService(ResourceService[Shipment]):
    """State and ASGI app of the shipping service; ``shipments`` maps id to :class:`Shipment`."""

    service = "shipping"
    noun = "shipment"
    id_prefix = "shp_"
    create_tool = "schedule_shipment"
    undo_verb = "cancel"
    active_status = "scheduled"
    undone_status = "cancelled"

    @property
    def shipments(self) -> dict[str, Shipment]:
        """Shipment id -> :class:`Shipment` (the live records)."""
        return self.records

    def _record_from_dict(self, data: dict[str, Any]) -> Shipment:
        return Shipment.from_dict(data)

    # -- the domain rule: unshippable countries; the carrier is a hash of the key ----

    def _new_record(self, req: EffectRequest, record_id: str) -> Shipment:
        parsed = parse_body(_ShipmentRequest, req.body)
        country = parsed.address.country
        if country in self.scenario.unshippable_countries:
            raise Refused(business(f"cannot ship to country {country}"))
        pick = hashlib.blake2b(req.key.encode(), digest_size=2).digest()
        return Shipment(
            shipment_id=record_id,
            order_id=parsed.order_id,
            country=country,
            items=tuple((line.sku, line.quantity) for line in parsed.items),
            carrier=CARRIERS[pick[0] % len(CARRIERS)],
            eta_days=1 + pick[1] % 5,
            status="scheduled",
            idempotency_key=req.key,
        )
