"""Hostile and malformed order input (issue 12): every bad value is refused at input,
naming the field and the value, and nothing reaches a service or a store unbounded."""

from __future__ import annotations

from typing import Any

import pytest

from agents.orders import ORDER_FULFILMENT
from coordinator.errors import InvalidInput

ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}


def order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "customer": "Ada",
        "items": [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}],
        "currency": "EUR",
        "payment_method": "tok_visa",
        "shipping_address": ADDRESS,
    }
    data.update(overrides)
    return data


def refusal(data: Any, context: dict[str, Any] | None = None) -> dict[str, str]:
    """The field -> message pairs the workflow's input validation answers ``data`` with."""
    with pytest.raises(InvalidInput) as info:
        ORDER_FULFILMENT.validate_input(data, context=context)
    return dict(info.value.errors)


def test_a_validators_message_reaches_the_user_without_pydantics_prefix() -> None:
    data = order_data(items=[{"sku": "SKU-DURIAN", "quantity": 1, "unit_price_cents": 1}])
    errors = refusal(data, context={"known_skus": {"SKU-APPLE"}})
    assert errors == {"items.0.sku": "unknown SKU 'SKU-DURIAN'; known SKUs: SKU-APPLE"}
    # The same message in the exception's text, which the CLI prints.
    with pytest.raises(InvalidInput, match=r"items\.0\.sku: unknown SKU 'SKU-DURIAN'") as info:
        ORDER_FULFILMENT.validate_input(data, context={"known_skus": {"SKU-APPLE"}})
    assert "Value error" not in str(info.value)
