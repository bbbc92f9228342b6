"""The invariant checker finds what it should, names the rule, and shows the trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import EventFactory, LogicalClock, MemoryEventLog, RunSettings, WorkflowStatus, open_coordinator
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.saga import Saga, StepReport
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.invariants import check_orders
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.lab.invariants import RULES, check_runs, events_of, render_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001), compensation_retries=Backoff(initial_delay=0.001))
SAGA = Saga(ORDER_FULFILMENT, factory=EventFactory(clock=LogicalClock()))
INVENTORY, PAYMENT, SHIPPING = ORDER_FULFILMENT.steps
ORDER = {
    "order_id": "o-1",
    "items": [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}],
    "currency": "EUR",
    "payment_method": "tok_visa",
}
OK = StepReport(ok=True, result={"id": "x"})
FAIL = StepReport(ok=False, reason="declined")


def completed_chain() -> list[Event]:
    started = SAGA.started("o-1", ORDER)
    reserved = SAGA.performed(INVENTORY, OK, cause=started)
    charged = SAGA.performed(PAYMENT, OK, cause=reserved)
    shipped = SAGA.performed(SHIPPING, OK, cause=charged)
    return [started, reserved, charged, shipped, SAGA.finished(cause=shipped)]


def compensated_chain() -> list[Event]:
    started = SAGA.started("o-1", ORDER)
    reserved = SAGA.performed(INVENTORY, OK, cause=started)
    declined = SAGA.performed(PAYMENT, FAIL, cause=reserved)
    released = SAGA.compensated(INVENTORY, OK, cause=declined)
    return [started, reserved, declined, released, SAGA.finished(cause=released)]


def rules(events: list[Event], **options: Any) -> dict[str, int]:
    return check_runs(ORDER_FULFILMENT, {"o-1": events}, **options).by_rule


def test_well_formed_runs_break_no_rule() -> None:
    assert rules(completed_chain()) == {}
    assert rules(compensated_chain()) == {}
    assert set(RULES) >= {"ended", "cause-once", "effect-once", "holds"}


def test_a_run_that_stopped_short_did_not_end() -> None:
    report = check_runs(ORDER_FULFILMENT, {"o-1": completed_chain()[:3]})
    assert report.by_rule == {"ended": 1}
    assert "it stopped at PaymentProcessed" in report.violations[0].message
    assert report.statuses == {"o-1": "failed"}


def test_two_outcomes_of_one_trigger_are_caught_with_the_trace() -> None:
    chain = compensated_chain()
    deadline_verdict = SAGA.compensated(INVENTORY, FAIL, cause=chain[2])  # "the release failed"
    events = [*chain, deadline_verdict, SAGA.finished(cause=deadline_verdict)]
    report = check_runs(ORDER_FULFILMENT, {"o-1": events})
    assert report.by_rule == {"cause-once": 1, "one-end": 1}
    violation = next(v for v in report.violations if v.rule == "cause-once")
    assert violation.message == "PaymentFailed caused 2 events: InventoryReleased, InventoryReleasedFailed"
    rendered = violation.render()
    assert "[cause-once] o-1:" in rendered
    assert "    OrderPlaced <workflow/order-fulfilment>" in rendered
    assert "PaymentFailed <agent/payment>" in rendered and "-- declined" in rendered


def test_an_event_the_saga_does_not_allow_is_caught() -> None:
    chain = completed_chain()
    skipped = SAGA.performed(SHIPPING, OK, cause=chain[1])  # shipping right after the reservation
    assert rules([*chain[:2], skipped, SAGA.finished(cause=skipped)])["follows-saga"] == 1
    orphan = SAGA.performed(PAYMENT, OK, cause=completed_chain()[0].model_copy(update={"id": "elsewhere"}))
    assert rules([*chain, orphan])["follows-saga"] == 1


def test_a_completed_run_that_never_did_a_step_is_not_an_outcome() -> None:
    chain = completed_chain()
    assert rules([chain[0], chain[1], chain[4]])["outcome"] >= 1


def test_the_result_a_caller_got_must_agree_with_the_log() -> None:
    events = completed_chain()
    told = SAGA.result("o-1", compensated_chain(), mode="orchestration")
    assert rules(events, results=[told]) == {"result": 1}


def test_an_effect_made_twice_is_caught_and_laid_at_its_run() -> None:
    report = check_runs(ORDER_FULFILMENT, {"o-1": completed_chain()}, effects_by_key={"o-1/payment/charge_payment": 2})
    (violation,) = report.violations
    assert (violation.rule, violation.workflow_id) == ("effect-once", "o-1")
    assert violation.trace == render_trace(completed_chain())


@pytest.mark.parametrize(
    ("chain", "held", "rule_count"),
    [
        (completed_chain, {"inventory": 1, "payment": 1, "shipping": 1}, 0),
        (completed_chain, {"inventory": 1, "payment": 0, "shipping": 1}, 1),
        (compensated_chain, {"inventory": 0, "payment": 0, "shipping": 0}, 0),
        (compensated_chain, {"inventory": 0, "payment": 1, "shipping": 0}, 1),  # the failed step holds something
    ],
)
def test_what_a_run_holds_must_match_its_outcome(chain: Any, held: dict[str, int], rule_count: int) -> None:
    assert rules(chain(), holdings=lambda _: held).get("holds", 0) == rule_count


# -- the order domain ---------------------------------------------------------------------


def example_orders() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLES / "orders.jsonl").read_text().splitlines() if line.strip()]


async def run_examples() -> tuple[Sandbox, dict[str, list[Event]], list[WorkflowResult]]:
    sandbox, log = Sandbox(), MemoryEventLog()
    async with (
        sandbox.client() as client,
        open_coordinator(ORDER_FULFILMENT, agents=order_agents(client=client), settings=FAST, event_log=log) as c,
    ):
        results = await c.run_many([ORDER_FULFILMENT.validate_input(o) for o in example_orders()])
    return sandbox, events_of(log, [r.workflow_id for r in results]), results


async def test_the_example_orders_keep_every_order_invariant() -> None:
    sandbox, runs, results = await run_examples()
    report = check_orders(ORDER_FULFILMENT, sandbox, runs, results=results, counters=sandbox.counters)
    assert report.ok, report.render()
    assert report.render() == "all invariants hold for 8 runs"


async def test_a_refund_behind_the_sagas_back_breaks_money_effects_and_holdings() -> None:
    sandbox, runs, results = await run_examples()
    (charge,) = sandbox.effects_for("o-1001").charges
    charge.status = "refunded"  # somebody refunded a completed order by hand
    report = check_orders(ORDER_FULFILMENT, sandbox, runs, results=results)
    assert report.by_rule == {"holds": 1, "money": 1}
    money = next(v for v in report.violations if v.rule == "money")
    assert money.message.startswith("EUR: charged ") and "but completed orders total" in money.message


async def test_stock_that_leaks_and_effects_of_unknown_orders_are_caught() -> None:
    sandbox, runs, results = await run_examples()
    sandbox.inventory.stock["SKU-KIWI"] -= 1
    async with sandbox.client() as client:
        answer = await client.post(
            "/inventory/reservations",
            json={"order_id": "o-ghost", "items": [{"sku": "SKU-FIG", "quantity": 1}]},
            headers={"Idempotency-Key": "o-ghost/inventory/reserve_stock"},
        )
        assert answer.status_code == 201
    report = check_orders(ORDER_FULFILMENT, sandbox, runs, results=results)
    assert report.by_rule == {"stray-effect": 1, "stock": 2}
    assert any("SKU-KIWI" in v.message for v in report.violations)
    assert any(v.workflow_id == "o-ghost" for v in report.violations)


async def test_a_completed_order_without_its_shipment_is_caught() -> None:
    sandbox, runs, results = await run_examples()
    (shipment,) = sandbox.effects_for("o-1002").shipments
    shipment.status = "cancelled"
    report = check_orders(ORDER_FULFILMENT, sandbox, runs, results=results)
    assert report.by_rule == {"holds": 1}
    assert report.violations[0].message == "completed, but step 'shipping' holds 0 effects, want exactly 1"
    assert results[1].status is WorkflowStatus.COMPLETED
