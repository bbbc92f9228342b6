"""Prices come from the catalogue, not the order (issue 12).

Two layers: the inventory service prices the reservation from its catalogue and the
payment step charges that total, whatever the order states (an API caller that
validates without a catalogue); and input validation that knows the catalogue (the
order app's environment, in-process or remote) refuses an order stating another
price, total or currency before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_coordinator import (
    MODES,
    LogicalClock,
    MemoryEventLog,
    RunSettings,
    StepStatus,
    WorkflowStatus,
    arun_workflow,
)
from agent_coordinator.core.app import AppOptions
from agent_coordinator.core.errors import InvalidInput, WorkflowDefinitionError
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import (
    ORDER_FULFILMENT,
    charge_facts,
    check_order_effects,
    order_agents,
    order_fulfilment_app,
)
from agent_coordinator.examples.orders.invariants import check_orders
from agent_coordinator.examples.orders.sandbox import CatalogueItem, Sandbox, Scenario
from agent_coordinator.shell.cli import app

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001), compensation_retries=Backoff(initial_delay=0.001))
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}
CHEAP_APPLES = [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 1}]  # the catalogue says 120


def order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": "o-cheap",
        "customer": "Mallory",
        "items": CHEAP_APPLES,
        "currency": "EUR",
        "payment_method": "tok_visa",
        "shipping_address": ADDRESS,
    }
    data.update(overrides)
    return data


def catalogue_context() -> dict[str, Any]:
    scenario = Scenario.default()
    return {
        "known_skus": set(scenario.catalogue),
        "catalogue_prices": {sku: item.unit_price_cents for sku, item in scenario.catalogue.items()},
        "catalogue_currency": scenario.currency,
    }


def refusal(data: Any, context: dict[str, Any] | None) -> dict[str, str]:
    with pytest.raises(InvalidInput) as info:
        ORDER_FULFILMENT.validate_input(data, context=context)
    return dict(info.value.errors)


# -- the run: the charge is the catalogue total from the reservation ------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_order_stating_a_price_of_one_cent_is_charged_the_catalogue_price(mode: str) -> None:
    sandbox = Sandbox()
    log = MemoryEventLog()
    async with sandbox.client() as client:
        result = await arun_workflow(
            ORDER_FULFILMENT,
            order_data(),  # validated without a catalogue: the stated price passes input
            agents=order_agents(client=client),
            mode=mode,
            settings=FAST,
            clock=LogicalClock(),
            event_log=log,
        )
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    (reservation,) = sandbox.effects_for("o-cheap").reservations
    assert [(i.sku, i.quantity, i.unit_price_cents) for i in reservation.items] == [("SKU-APPLE", 2, 120)]
    assert (reservation.total_cents, reservation.currency) == (240, "EUR")
    (charge,) = sandbox.effects_for("o-cheap").charges
    assert (charge.amount_cents, charge.currency) == (240, "EUR")  # not 2 cents
    reserved = next(e for e in result.events if e.type == "InventoryReserved")
    assert reserved.data["results"]["inventory"]["total_cents"] == 240
    charged = next(e for e in result.events if e.type == "PaymentProcessed")
    assert charged.data["results"]["payment"]["amount_cents"] == 240
    # Both checkers hold the charge to the catalogue, not to the order's stated prices.
    assert check_order_effects(sandbox, [result]) == []
    report = check_orders(ORDER_FULFILMENT, sandbox, {"o-cheap": list(result.events)}, results=[result])
    assert report.ok, report.render()


@pytest.mark.parametrize("mode", MODES)
async def test_an_order_in_a_currency_the_catalogue_does_not_price_in_is_refused_by_the_service(mode: str) -> None:
    sandbox = Sandbox()
    order = order_data(
        order_id="o-usd", currency="USD", items=[{"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 120}]
    )
    async with sandbox.client() as client:
        result = await arun_workflow(
            ORDER_FULFILMENT, order, agents=order_agents(client=client), mode=mode, settings=FAST
        )
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.outcome("inventory").status is StepStatus.FAILED
    assert result.reason == "step 'inventory' failed: the catalogue prices in EUR, not USD; order in EUR"
    assert sandbox.effects_for("o-usd").counts == {}
    assert sandbox.payment.counters.requests == 0


async def test_the_approval_threshold_is_held_to_the_catalogue_total() -> None:
    sandbox = Sandbox()
    settings = FAST.model_copy(update={"parameters": {"approval_threshold_cents": 100}})
    async with sandbox.client() as client:
        result = await arun_workflow(
            ORDER_FULFILMENT, order_data(), agents=order_agents(client=client), mode="orchestration", settings=settings
        )
    # The order says 2 cents; the catalogue says 240, above the threshold of 100.
    assert result.status is WorkflowStatus.AWAITING_APPROVAL
    requested = next(e for e in result.events if e.type == "PaymentApprovalRequested")
    assert "the total 240 cents is above the approval threshold of 100 cents" in json.dumps(requested.data)


async def test_a_reservation_over_the_amount_bound_is_refused_by_the_service() -> None:
    scenario = Scenario(catalogue={"SKU-GOLD": CatalogueItem(name="Gold", unit_price_cents=10**12, stock=10)})
    sandbox = Sandbox(scenario)
    async with sandbox.client() as client:
        answer = await client.post(
            "/inventory/reservations",
            json={"order_id": "o-1", "items": [{"sku": "SKU-GOLD", "quantity": 2}]},
            headers={"Idempotency-Key": "o-1/inventory/reserve_stock"},
        )
    assert answer.status_code == 409
    assert answer.json()["reason"] == (
        "the order totals 2000000000000 cents at catalogue prices, more than the 1000000000000 one reservation "
        "may hold; split the order"
    )
    assert sandbox.inventory.stock["SKU-GOLD"] == 10


# -- input: refused when the validation context knows the catalogue ---------------------------


def test_a_stated_price_other_than_the_catalogues_is_refused_naming_item_stated_and_catalogue_price() -> None:
    items = [
        {"sku": "SKU-PEAR", "quantity": 1, "unit_price_cents": 150},
        {"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 1},
    ]
    assert refusal(order_data(items=items), catalogue_context()) == {
        "items.1.unit_price_cents": "SKU-APPLE costs 120 cents in the catalogue, not the stated 1; "
        "prices come from the catalogue: state 120"
    }


def test_a_stated_total_other_than_the_catalogue_total_is_refused() -> None:
    items = [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}]
    assert refusal(order_data(items=items, total_cents=2), catalogue_context()) == {
        "total_cents": "total_cents 2 does not match the items' total 240; omit total_cents or correct it"
    }
    order = ORDER_FULFILMENT.validate_input(order_data(items=items, total_cents=240), context=catalogue_context())
    assert order.model_dump()["total_cents"] == 240


def test_a_currency_other_than_the_catalogues_is_refused_at_input() -> None:
    items = [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}]
    assert refusal(order_data(items=items, currency="USD"), catalogue_context()) == {
        "currency": "the catalogue prices in EUR, not USD; order in EUR"
    }


async def test_the_order_apps_environment_gives_validation_the_catalogue() -> None:
    async with order_fulfilment_app.environment(AppOptions()) as env:
        context = env.validation_context
    assert context is not None
    assert context["catalogue_prices"]["SKU-APPLE"] == 120 and context["catalogue_currency"] == "EUR"
    assert "items.0.unit_price_cents" in refusal(order_data(), context)


def test_the_cli_refuses_the_one_cent_apples_and_runs_the_honest_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "300")
    honest = order_data(order_id="o-honest", items=[{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}])
    orders = tmp_path / "orders.jsonl"
    orders.write_text(json.dumps(order_data()) + "\n" + json.dumps(honest) + "\n")
    result = CliRunner().invoke(app, ["run", str(orders)])
    assert result.exit_code == 1, result.output
    errors = " ".join(result.stderr.split())
    assert (
        "orders.jsonl:1: field `items.0.unit_price_cents`: SKU-APPLE costs 120 cents in the catalogue, "
        "not the stated 1; prices come from the catalogue: state 120" in errors
    )
    assert "1 runs: 1 completed, 0 compensated; 1 input problem(s)" in result.stdout


async def test_a_charge_of_the_stated_total_instead_of_the_catalogues_is_caught_by_both_checkers() -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        result = await arun_workflow(ORDER_FULFILMENT, order_data(), agents=order_agents(client=client), settings=FAST)
    (charge,) = sandbox.effects_for("o-cheap").charges
    charge.amount_cents = 2  # what the order's stated prices add up to
    assert check_order_effects(sandbox, [result]) == [
        "o-cheap: charged [(2, 'EUR')], want exactly [(240, 'EUR')] (the reservation's catalogue total)"
    ]
    report = check_orders(ORDER_FULFILMENT, sandbox, {"o-cheap": list(result.events)}, results=[result])
    assert report.by_rule == {"order-effects": 1, "money": 1}
    (effects,) = [v for v in report.violations if v.rule == "order-effects"]
    assert effects.message == "charged 2 EUR, the order's catalogue total is 240 EUR"


def test_the_charge_facts_read_the_reservation_and_name_what_a_foreign_service_left_out() -> None:
    order = order_data()
    done = {"inventory": {"reservation_id": "res_1", "total_cents": 240, "currency": "EUR"}}
    assert charge_facts(order, done) == {
        "order_id": "o-cheap",
        "amount_cents": 240,
        "currency": "EUR",
        "payment_method": "tok_visa",
    }
    with pytest.raises(WorkflowDefinitionError, match=r"the inventory step's result has no 'total_cents'"):
        charge_facts(order, {"inventory": {"reservation_id": "res_1"}})
