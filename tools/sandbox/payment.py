"""The sandbox payment service: charges and refunds.

Routes (mounted at ``/payment`` by :class:`tools.sandbox.Sandbox`):

* ``POST /charges {order_id, amount_cents, currency, payment_method}`` -> 201
  ``{charge_id, order_id, amount_cents, currency, status: "captured"}``. A declined
  card -> 409 business refusal ``card declined: <card>``; a flaky card -> 503 for
  the first N attempts of each key.
* ``POST /charges/{charge_id}/refund`` -> 200 ``{charge_id, status: "refunded",
  amount_cents}``; refunding again is a no-op with the same answer; unknown id -> 404.
* ``GET /charges[?order_id=...]`` -> ``{"charges": [...]}``
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
    transient,
)
from tools.sandbox.scenario import Scenario

__all__ = ["Charge", "PaymentService"]


class _ChargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1)


@dataclass(slots=True)
class Charge:
    """Money taken for an order; ``status`` goes ``captured`` -> ``refunded`` at most once."""

    charge_id: str
    order_id: str
    amount_cents: int
    currency: str
    payment_method: str
    status: Literal["captured", "refunded"]
    idempotency_key: str

    def as_json(self) -> dict[str, Any]:
        """The charge as the service answers it."""
        return {
            "charge_id": self.charge_id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "status": self.status,
        }


class PaymentService:
    """State and ASGI app of the payment service; ``charges`` maps id to :class:`Charge`."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.charges: dict[str, Charge] = {}
        self.store = IdempotencyStore("payment", scenario)
        self.app = service_app(
            [
                Route("/charges", self._post_charge, methods=["POST"]),
                Route("/charges", self._get_charges, methods=["GET"]),
                Route("/charges/{charge_id}/refund", self._post_refund, methods=["POST"]),
            ]
        )

    @property
    def counters(self) -> ServiceCounters:
        """Requests served and effects applied by this service."""
        return self.store.counters

    # -- effects (run under the store's lock; no awaits) -----------------------------

    def _charge(self, req: EffectRequest) -> Answer:
        parsed = parse_body(_ChargeRequest, req.body)
        card = parsed.payment_method
        failures = self.scenario.flaky_cards.get(card, 0)
        if req.attempt <= failures:
            return transient(f"payment processor timed out for card {card} (attempt {req.attempt}); retry")
        if card in self.scenario.declined_cards:
            return business(f"card declined: {card}")
        charge = Charge(
            charge_id=derive_id("ch_", req.key),
            order_id=parsed.order_id,
            amount_cents=parsed.amount_cents,
            currency=parsed.currency,
            payment_method=card,
            status="captured",
            idempotency_key=req.key,
        )
        self.charges[charge.charge_id] = charge
        self.store.counters.effect(req.key)
        return ok(charge.as_json(), status=201)

    def _refund(self, req: EffectRequest) -> Answer:
        charge_id = str(req.path_params["charge_id"])
        charge = self.charges.get(charge_id)
        if charge is None:
            return invalid(f"no charge {charge_id!r}; check the id returned by charge_payment", status=404)
        if charge.status == "captured":
            charge.status = "refunded"
            self.store.counters.effect(req.key)
        return ok({"charge_id": charge_id, "status": "refunded", "amount_cents": charge.amount_cents})

    # -- routes ----------------------------------------------------------------------

    async def _post_charge(self, request: Request) -> Response:
        return await self.store.effect(request, self._charge)

    async def _post_refund(self, request: Request) -> Response:
        return await self.store.effect(request, self._refund)

    async def _get_charges(self, request: Request) -> Response:
        def read(request: Request) -> Answer:
            order_id = request.query_params.get("order_id")
            found = [c.as_json() for c in self.charges.values() if order_id is None or c.order_id == order_id]
            return ok({"charges": found})

        return await self.store.read(request, read)
