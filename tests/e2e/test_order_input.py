"""Hostile and malformed order input (issue 12): every bad value is refused at input,
naming the field and the value, and nothing reaches a service or a store unbounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_coordinator import MODES, RunSettings, WorkflowStatus, arun_workflow
from agent_coordinator.core.context import ToolCallContext, idempotency_key, idempotency_key_prefix
from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.core.events import EventFactory, LogicalClock
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.lab.invariants import check_runs
from agent_coordinator.shell.cli import app

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001), compensation_retries=Backoff(initial_delay=0.001))
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


# -- numbers: bounded and strict ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            order_data(items=[{"sku": "SKU-APPLE", "quantity": 10**30, "unit_price_cents": 120}]),
            "items.0.quantity",
            "Input should be less than or equal to 1000000",
        ),
        (
            order_data(items=[{"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 10**25}]),
            "items.0.unit_price_cents",
            "Input should be less than or equal to 1000000000000",
        ),
        (
            order_data(items=[{"sku": "SKU-APPLE", "quantity": 1_000_000, "unit_price_cents": 10**12}]),
            "items",
            "the items total 1000000000000000000 cents, more than the 1000000000000 one order may total; "
            "split it into several orders",
        ),
        (
            order_data(items=[{"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 1}] * 1001),
            "items",
            "List should have at most 1000 items after validation, not 1001",
        ),
        (order_data(total_cents=10**30), "total_cents", "Input should be less than or equal to 1000000000000"),
    ],
)
def test_every_number_is_bounded_and_the_field_named(data: dict[str, Any], field: str, message: str) -> None:
    assert refusal(data)[field] == message


@pytest.mark.parametrize(
    ("value", "shown"),
    [("3", "'3'"), (True, "True"), (3.0, "3.0"), (None, "None"), ("1" * 100, "'" + "1" * 40 + "...'")],
)
def test_a_quantity_is_a_json_integer_never_a_string_or_a_boolean(value: Any, shown: str) -> None:
    data = order_data(items=[{"sku": "SKU-APPLE", "quantity": value, "unit_price_cents": 120}])
    expected = f'{shown} is not a whole number; write it as a JSON integer, e.g. 3, not "3"'
    assert refusal(data) == {"items.0.quantity": expected}


def test_prices_and_totals_are_strict_too_and_json_text_is_held_to_the_same_rules() -> None:
    item = {"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": "120"}
    assert "items.0.unit_price_cents" in refusal(order_data(items=[item]))
    assert "total_cents" in refusal(order_data(total_cents=True))
    text = json.dumps(order_data(items=[{"sku": "SKU-APPLE", "quantity": True, "unit_price_cents": 120}]))
    assert list(refusal(text)) == ["items.0.quantity"]
    assert ORDER_FULFILMENT.validate_input(json.dumps(order_data(total_cents=240))).model_dump()["total_cents"] == 240


# -- ids and text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_id", "message"),
    [
        ("o\x00-1", "'o\\x00-1' contains U+0000 (a control character) at position 1"),
        ("o-1\x1b[31m", "'o-1\\x1b[31m' contains U+001B (a control character) at position 3"),
        ("o 1", "'o 1' contains U+0020 (whitespace) at position 1"),
        ("o\u00a01", "'o\\xa01' contains U+00A0 (whitespace) at position 1"),
        ("o\u200b1", "'o\\u200b1' contains '\\u200b' (U+200B) at position 1"),
        ("a/b", "'a/b' contains '/' (U+002F) at position 1"),
    ],
)
def test_an_order_id_is_one_printable_word(order_id: str, message: str) -> None:
    (error,) = refusal(order_data(order_id=order_id)).items()
    assert error == ("order_id", f"{message}; an id is one word of printable characters, without whitespace or '/'")


@pytest.mark.parametrize("order_id", ["ü-1", "注文-42", "заказ-7", "o-1001", "O_1.2:3#x@y+z%25"])
def test_an_order_id_in_any_script_is_accepted(order_id: str) -> None:
    assert ORDER_FULFILMENT.workflow_id(ORDER_FULFILMENT.validate_input(order_data(order_id=order_id))) == order_id


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"customer": "A" * 201}, "customer"),
        ({"order_id": "o" * 201}, "order_id"),
        ({"payment_method": "tok_" * 60}, "payment_method"),
        ({"shipping_address": {**ADDRESS, "line1": "x" * 50_000}}, "shipping_address.line1"),
        ({"shipping_address": {**ADDRESS, "postcode": "1" * 21}}, "shipping_address.postcode"),
        ({"items": [{"sku": "S" * 65, "quantity": 1, "unit_price_cents": 1}]}, "items.0.sku"),
    ],
)
def test_free_text_has_a_maximum_length(overrides: dict[str, Any], field: str) -> None:
    assert refusal(order_data(**overrides))[field].startswith("String should have at most")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"customer": "Ada\x1b[2J"}, "customer", "'Ada\\x1b[2J' contains U+001B (a control character) at position 3"),
        ({"customer": "Ada\nLovelace"}, "customer", "'Ada\\nLovelace' contains U+000A (a control character)"),
        (
            {"shipping_address": {**ADDRESS, "city": "Utre\u2028cht"}},
            "shipping_address.city",
            "'Utre\\u2028cht' contains U+2028 (a line separator) at position 4",
        ),
        ({"payment_method": "tok\x00visa"}, "payment_method", "'tok\\x00visa' contains U+0000 (a control character)"),
        (
            {"items": [{"sku": "SKU-\x7fAPPLE", "quantity": 1, "unit_price_cents": 1}]},
            "items.0.sku",
            "'SKU-\\x7fAPPLE' contains U+007F (a control character) at position 4",
        ),
    ],
)
def test_free_text_refuses_control_characters(overrides: dict[str, Any], field: str, message: str) -> None:
    got = refusal(order_data(**overrides))[field]
    assert got.startswith(message) and got.endswith("; use printable text on one line"), got


def test_free_text_in_any_script_with_spaces_is_accepted() -> None:
    address = {**ADDRESS, "name": "Zoë Ñúñez-Øster", "line1": "Straße 1\u00a0b", "city": "東京"}
    order = ORDER_FULFILMENT.validate_input(order_data(customer="Zoë 👩‍💻", shipping_address=address))
    assert order.model_dump()["shipping_address"]["city"] == "東京"


# -- currency -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "message"),
    [
        ("XXX", "'XXX' is not the ISO 4217 code of a currency one can pay in; use one such as 'EUR', 'USD' or 'GBP'"),
        ("XAU", "'XAU' is not the ISO 4217 code of a currency one can pay in; use one such as 'EUR', 'USD' or 'GBP'"),
        ("ABC", "'ABC' is not the ISO 4217 code of a currency one can pay in; use one such as 'EUR', 'USD' or 'GBP'"),
        ("usd", "'usd' must be written in capitals: 'USD'"),
        ("EURO", "'EURO' is not the ISO 4217 code of a currency one can pay in; use one such as 'EUR', 'USD' or 'GBP'"),
    ],
)
def test_a_currency_is_an_iso_4217_code_one_can_pay_in(currency: str, message: str) -> None:
    assert refusal(order_data(currency=currency)) == {"currency": message}


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY", "CHF", "XOF", "XCG"])
def test_active_currencies_are_accepted(currency: str) -> None:
    assert ORDER_FULFILMENT.validate_input(order_data(currency=currency)).model_dump()["currency"] == currency


# -- the command line: each hostile line is named, the good ones still run -------------------


def test_hostile_lines_are_named_by_the_cli_and_the_good_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "300")
    lines = [
        order_data(order_id="big-q", items=[{"sku": "SKU-APPLE", "quantity": 10**30, "unit_price_cents": 120}]),
        order_data(order_id="big-p", items=[{"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 10**25}]),
        order_data(order_id="str-q", items=[{"sku": "SKU-APPLE", "quantity": "3", "unit_price_cents": 120}]),
        order_data(order_id="nul\x00"),
        order_data(order_id="xxx", currency="XXX"),
        order_data(order_id="long", customer="x" * 100_000),
        order_data(order_id="good"),
    ]
    orders = tmp_path / "hostile.jsonl"
    orders.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(app, ["run", str(orders)])
    errors = " ".join(result.stderr.split())
    assert result.exit_code == 1, result.output
    assert "hostile.jsonl:1: field `items.0.quantity`: Input should be less than or equal to 1000000" in errors
    assert "hostile.jsonl:2: field `items.0.unit_price_cents`: Input should be less than or equal to" in errors
    assert "hostile.jsonl:3: field `items.0.quantity`: '3' is not a whole number" in errors
    assert "hostile.jsonl:4: field `order_id`: 'nul\\x00' contains U+0000 (a control character)" in errors
    assert "hostile.jsonl:5: field `currency`: 'XXX' is not the ISO 4217 code" in errors
    assert "hostile.jsonl:6: field `customer`: String should have at most 200 characters" in errors
    assert "Traceback" not in result.output
    assert "1 runs: 1 completed, 0 compensated; 6 input problem(s)" in result.stdout


# -- a Unicode order id runs end to end: its idempotency keys are percent-encoded ------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_order_id_in_any_script_completes_in_either_mode(mode: str) -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        orders = [order_data(order_id="ü-1"), order_data(order_id="%C3%BC-1"), order_data(order_id="注文-x")]
        results = [
            await arun_workflow(ORDER_FULFILMENT, order, agents=order_agents(client=client), mode=mode, settings=FAST)
            for order in orders
        ]
    assert [(r.workflow_id, r.status, r.reason) for r in results] == [
        ("ü-1", WorkflowStatus.COMPLETED, None),
        ("%C3%BC-1", WorkflowStatus.COMPLETED, None),
        ("注文-x", WorkflowStatus.COMPLETED, None),
    ]
    assert check_order_effects(sandbox, results) == []
    # ü-1 and the id spelled like its encoding get keys of their own: each order its own effects.
    keys = sorted(r.idempotency_key for r in sandbox.inventory.reservations.values())
    assert keys == [
        "%25C3%25BC-1/inventory/reserve_stock",
        "%C3%BC-1/inventory/reserve_stock",
        "%E6%B3%A8%E6%96%87-x/inventory/reserve_stock",
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_a_control_character_in_an_id_is_refused_before_anything_runs(mode: str) -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        for order_id in ("o-1\x00", "o-1\x1b"):
            with pytest.raises(InvalidInput, match=r"order_id: .* \(a control character\)"):
                await arun_workflow(
                    ORDER_FULFILMENT, order_data(order_id=order_id), agents=order_agents(client=client), mode=mode
                )
    assert sandbox.request_counts == {"inventory": 0, "payment": 0, "shipping": 0}


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("o-1001", "payment", "charge_payment"), "o-1001/payment/charge_payment"),
        (("ü-1", "payment", "charge_payment"), "%C3%BC-1/payment/charge_payment"),
        (("50%", "payment", "charge_payment"), "50%25/payment/charge_payment"),
        (("a/b", "c", "d"), "a%2Fb/c/d"),
        (("a b\x00\ud800", "c", "d"), "a%20b%00%ED%A0%80/c/d"),
        (("O_1.2:3#x@y+z~!", "s", "a"), "O_1.2:3#x@y+z~!/s/a"),
    ],
)
def test_an_idempotency_key_is_printable_ascii_and_one_to_one(parts: tuple[str, str, str], key: str) -> None:
    assert idempotency_key(*parts) == key == ToolCallContext(*parts).idempotency_key
    assert key.isascii() and key.isprintable() and " " not in key
    assert key.startswith(idempotency_key_prefix(parts[0]))


def test_an_effect_made_twice_under_an_encoded_key_is_laid_at_its_unicode_run() -> None:
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory(clock=LogicalClock()))
    started = saga.started("ü-1", order_data(order_id="ü-1"))
    report = check_runs(ORDER_FULFILMENT, {"ü-1": [started]}, effects_by_key={idempotency_key("ü-1", "a", "b"): 2})
    (violation,) = [v for v in report.violations if v.rule == "effect-once"]
    assert violation.workflow_id == "ü-1"
    assert violation.message == "idempotency key '%C3%BC-1/a/b' produced 2 effects"
