"""The sandbox payment service: charges and refunds.

Routes (mounted at ``/payment`` by :class:`agent_coordinator.examples.orders.sandbox.Sandbox`):

* ``POST /charges {order_id, amount_cents, currency, payment_method}`` -> 201
  ``{charge_id, order_id, amount_cents, currency, status: "captured"}``. A declined
  card -> 409 business refusal ``card declined: <card>``; a flaky card -> 503 for
  the first N attempts of each key.
* ``POST /charges/{charge_id}/refund`` -> 200 ``{charge_id, status: "refunded",
  amount_cents}``; refunding again is a no-op with the same answer; unknown id -> 404.
* ``GET /charges[?order_id=...]`` -> ``{"charges": [...]}`` (full records, with
  ``payment_method`` and ``idempotency_key``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_coordinator.examples.orders.sandbox.idempotency import (
    EffectRequest,
    Refused,
    business,
    parse_body,
    transient,
)
from agent_coordinator.examples.orders.sandbox.resource import ResourceService, record_from_dict
from agent_coordinator.examples.orders.sandbox.scenario import MAX_AMOUNT_CENTS

__all__ = ["Charge", "PaymentService"]


class _ChargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=200)
    amount_cents: int = Field(gt=0, le=MAX_AMOUNT_CENTS)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1, max_length=200)


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

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: :meth:`as_json` plus ``payment_method`` and ``idempotency_key``."""
        return {**self.as_json(), "payment_method": self.payment_method, "idempotency_key": self.idempotency_key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Charge:
        """The charge :meth:`to_dict` gave ``data``."""
        return record_from_dict(cls, data)


class PaymentService(ResourceService[Charge]):
    """State and ASGI app of the payment service; ``charges`` maps id to :class:`Charge`."""

    service = "payment"
    noun = "charge"
    id_prefix = "ch_"
    create_tool = "charge_payment"
    undo_verb = "refund"
    active_status = "captured"
    undone_status = "refunded"

    @property
    def charges(self) -> dict[str, Charge]:
        """Charge id -> :class:`Charge` (the live records)."""
        return self.records

    # -- the domain rule: flaky cards time out, declined cards are refused -----------

    def _new_record(self, req: EffectRequest, record_id: str) -> Charge:
        parsed = parse_body(_ChargeRequest, req.body)
        card = parsed.payment_method
        failures = self.scenario.flaky_cards.get(card, 0)
        if req.attempt <= failures:
            raise Refused(transient(f"payment processor timed out for card {card} (attempt {req.attempt}); retry"))
        if card in self.scenario.declined_cards:
            raise Refused(business(f"card declined: {card}"))
        return Charge(
            charge_id=record_id,
            order_id=parsed.order_id,
            amount_cents=parsed.amount_cents,
            currency=parsed.currency,
            payment_method=card,
            status="captured",
            idempotency_key=req.key,
        )

    def _record_from_dict(self, data: dict[str, Any]) -> Charge:
        return Charge.from_dict(data)

    def _undo_answer(self, record_id: str, record: Charge) -> dict[str, Any]:
        answer = super()._undo_answer(record_id, record)
        answer["amount_cents"] = record.amount_cents
        return answer
