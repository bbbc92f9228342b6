"""The order domain's invariants, over the sandbox services' state and the event log.

On top of the workflow-agnostic rules of :func:`agent_coordinator.lab.invariants.check_runs`
(every run ended, no event caused twice, compensations complete, no effect twice,
what each step holds), :func:`check_orders` checks:

* ``order-effects`` -- a completed order holds exactly one reservation of its items
  priced at the catalogue's prices, one captured charge of its catalogue total in
  the catalogue's currency (never the prices the order states) and one scheduled
  shipment; a
  compensated order made each kind of effect at most once and holds none of them
  (released, refunded, cancelled);
* ``money`` -- per currency, money charged minus money refunded equals the catalogue
  totals of the completed orders (plus what orders needing attention still hold);
* ``stock`` -- for every SKU, available + held = initial stock, and what is held is
  exactly what the completed orders (and orders needing attention) reserved;
* ``stray-effect`` -- the services hold nothing for an order that was not run.

Each violation names its order and carries its trace (its events, causally).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.examples.orders.sandbox.app import InventoryState, OrderEffects
from agent_coordinator.examples.orders.sandbox.idempotency import ServiceCounters
from agent_coordinator.examples.orders.sandbox.payment import Charge
from agent_coordinator.examples.orders.sandbox.shipping import Shipment
from agent_coordinator.lab.invariants import InvariantReport, Violation, check_runs, render_trace

__all__ = ["ORDER_ACTIONS", "OrderServices", "catalogue_total", "check_orders"]

#: The order tools whose effects the sandbox records, by action -> kind of record.
ORDER_ACTIONS: dict[str, str] = {
    "reserve_stock": "reservation",
    "charge_payment": "charge",
    "schedule_shipment": "shipment",
}


class _Charges(Protocol):
    @property
    def charges(self) -> Mapping[str, Charge]: ...


class _Shipments(Protocol):
    @property
    def shipments(self) -> Mapping[str, Shipment]: ...


class OrderServices(Protocol):
    """What :func:`check_orders` reads: a :class:`~agent_coordinator.examples.orders.sandbox.Sandbox` or a
    :class:`~agent_coordinator.examples.orders.sandbox.RemoteSandboxState`."""

    @property
    def inventory(self) -> InventoryState: ...
    @property
    def payment(self) -> _Charges: ...
    @property
    def shipping(self) -> _Shipments: ...
    def effects_for(self, order_id: str) -> OrderEffects: ...


def catalogue_total(order: Mapping[str, Any], unit_prices: Mapping[str, int]) -> int | None:
    """What an order input costs at the catalogue's ``unit_prices`` (quantity x price
    over its items), whatever prices it states; ``None`` if it names a SKU the
    catalogue does not have."""
    items = order.get("items", [])
    if any(item["sku"] not in unit_prices for item in items):
        return None
    return sum(int(item["quantity"]) * unit_prices[item["sku"]] for item in items)


def _input(events: Sequence[Event], started_event: str) -> dict[str, Any]:
    for event in events:
        if event.type == started_event:
            return dict(event.data.get("input") or {})
    return {}


def check_orders(
    workflow: Workflow,
    services: OrderServices,
    runs: Mapping[str, Sequence[Event]],
    *,
    results: Iterable[WorkflowResult] = (),
    counters: Mapping[str, ServiceCounters] | None = None,
) -> InvariantReport:
    """Every invariant of order fulfilment over ``runs`` (order id -> its events).

    ``workflow`` is the order workflow (or one derived from it: steps whose action
    is not one of :data:`ORDER_ACTIONS` are only checked by the generic rules).
    ``counters`` are the services' counters (``Sandbox.counters``) for the
    ``effect-once`` rule. Returns the report; never raises for a bad state.
    """
    step_kind = {s.name: ORDER_ACTIONS[s.action] for s in workflow.steps if s.action in ORDER_ACTIONS}

    def holdings(order_id: str) -> dict[str, int]:
        effects = services.effects_for(order_id)
        in_force = {
            "reservation": sum(1 for r in effects.reservations if r.status == "held"),
            "charge": sum(1 for c in effects.charges if c.status == "captured"),
            "shipment": sum(1 for s in effects.shipments if s.status == "scheduled"),
        }
        return {step: in_force[kind] for step, kind in step_kind.items()}

    effects_by_key: dict[str, int] | None = None
    if counters is not None:
        effects_by_key = {}
        for service in counters.values():
            for key, count in service.effects_by_key.items():
                effects_by_key[key] = effects_by_key.get(key, 0) + count
    report = check_runs(workflow, runs, results=results, effects_by_key=effects_by_key, holdings=holdings)
    report.extend(_order_effects(workflow, services, runs, report.statuses, set(step_kind.values())))
    report.extend(_money_and_stock(workflow, services, runs, report.statuses))
    return report


def _order_effects(
    workflow: Workflow,
    services: OrderServices,
    runs: Mapping[str, Sequence[Event]],
    statuses: Mapping[str, str],
    kinds: set[str],
) -> list[Violation]:
    problems: list[Violation] = []
    for order_id, events in runs.items():
        status = statuses.get(order_id)
        effects = services.effects_for(order_id)
        order = _input(events, workflow.started_event)
        trace = render_trace(events)

        def problem(message: str, order_id: str = order_id, trace: tuple[str, ...] = trace) -> None:
            problems.append(Violation("order-effects", order_id, message, trace))

        records = {"reservation": effects.reservations, "charge": effects.charges, "shipment": effects.shipments}
        if status == "completed":
            for kind in sorted(kinds):
                found: Sequence[Any] = records[kind]
                if len(found) != 1:
                    problem(f"completed, but made {len(found)} {kind}s, want exactly 1")
            if "reservation" in kinds and len(effects.reservations) == 1:
                reserved = Counter({i.sku: 0 for i in effects.reservations[0].items})
                for item in effects.reservations[0].items:
                    reserved[item.sku] += item.quantity
                wanted: Counter[str] = Counter()
                for item in order.get("items", []):
                    wanted[item["sku"]] += int(item["quantity"])
                if reserved != wanted:
                    problem(f"reserved {dict(reserved)}, the order has {dict(wanted)}")
            inventory = services.inventory
            catalogue = (catalogue_total(order, inventory.unit_prices), inventory.currency)
            # The reservation prices the order and the charge takes that price: both
            # must be the catalogue's total, in its currency.
            amounts = []
            if "reservation" in kinds and len(effects.reservations) == 1:
                amounts.append(("reserved at", effects.reservations[0].total_cents, effects.reservations[0].currency))
            if "charge" in kinds and len(effects.charges) == 1:
                amounts.append(("charged", effects.charges[0].amount_cents, effects.charges[0].currency))
            for what, cents, currency in amounts:
                if (cents, currency) != catalogue:
                    problem(f"{what} {cents} {currency}, the order's catalogue total is {catalogue[0]} {catalogue[1]}")
        elif status == "compensated":
            for kind in sorted(kinds):
                if len(records[kind]) > 1:
                    problem(f"compensated, but made {len(records[kind])} {kind}s, want at most 1")
            if effects.outstanding:
                problem(f"compensated, but still holds {', '.join(effects.outstanding)}")
    run_ids = set(runs)
    strays = {r.order_id for r in services.inventory.reservations.values()}
    strays |= {c.order_id for c in services.payment.charges.values()}
    strays |= {s.order_id for s in services.shipping.shipments.values()}
    for order_id in sorted(strays - run_ids):
        problems.append(
            Violation("stray-effect", order_id, f"the services hold records for {order_id!r}, which was not run")
        )
    return problems


def _money_and_stock(
    workflow: Workflow,
    services: OrderServices,
    runs: Mapping[str, Sequence[Event]],
    statuses: Mapping[str, str],
) -> list[Violation]:
    problems: list[Violation] = []
    charged: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for charge in services.payment.charges.values():
        charged[charge.currency] += charge.amount_cents
        if charge.status == "refunded":
            refunded[charge.currency] += charge.amount_cents
    owed: Counter[str] = Counter()
    reserved: Counter[str] = Counter()
    for order_id, events in runs.items():
        status = statuses.get(order_id)
        order = _input(events, workflow.started_event)
        if status == "completed":
            # What the order costs is the catalogue's price, in the catalogue's currency.
            owed[services.inventory.currency] += catalogue_total(order, services.inventory.unit_prices) or 0
            for item in order.get("items", []):
                reserved[item["sku"]] += int(item["quantity"])
        elif status == "needs_attention":
            # Whatever such an order still holds is accounted to it, pending a person.
            effects = services.effects_for(order_id)
            for charge in effects.charges:
                if charge.status == "captured":
                    owed[charge.currency] += charge.amount_cents
            for reservation in effects.reservations:
                if reservation.status == "held":
                    for line in reservation.items:
                        reserved[line.sku] += line.quantity
    for currency in sorted(set(charged) | set(owed)):
        net = charged[currency] - refunded[currency]
        if net != owed[currency]:
            problems.append(
                Violation(
                    "money",
                    None,
                    f"{currency}: charged {charged[currency]} - refunded {refunded[currency]} = {net}, "
                    f"but completed orders total {owed[currency]}",
                )
            )
    inventory = services.inventory
    held: Counter[str] = Counter()
    for reservation in inventory.reservations.values():
        if reservation.status == "held":
            for line in reservation.items:
                held[line.sku] += line.quantity
    for sku, initial in sorted(inventory.initial_stock.items()):
        if inventory.stock.get(sku, 0) + held[sku] != initial:
            problems.append(
                Violation(
                    "stock", None, f"{sku}: {inventory.stock.get(sku, 0)} available + {held[sku]} held != {initial}"
                )
            )
    for sku in sorted(set(held) | set(reserved)):
        if held[sku] != reserved[sku]:
            problems.append(
                Violation("stock", None, f"{sku}: {held[sku]} held, but completed orders reserved {reserved[sku]}")
            )
    return problems
