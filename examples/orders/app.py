"""The flagship workflow: order fulfilment by an inventory, a payment and a shipping agent.

    OrderPlaced ─► reserve_stock ─► charge_payment ─► schedule_shipment ─► OrderCompleted
                   (release_stock)  (refund_payment)  (cancel_shipment)

Everything order-specific lives here and in :mod:`agent_coordinator.examples.orders.tools`; the coordinators
only see a :class:`~agent_coordinator.core.workflow.Workflow`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel

from agent_coordinator.agents.fake import ScriptedChatModel
from agent_coordinator.agents.models import parse_model_options
from agent_coordinator.core.agent import Agent
from agent_coordinator.core.app import SERVICE_ATTEMPTS, AppEnvironment, AppOptions, Parameter, WorkflowApp
from agent_coordinator.core.errors import CoordinatorError, WorkflowDefinitionError
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.workflow import Step, StepEvents, Workflow
from agent_coordinator.examples.orders.sandbox import OrderEffects, RemoteSandboxState, Sandbox, SandboxState, Scenario
from agent_coordinator.examples.orders.tools import Order, ServiceUrls, order_tools

__all__ = [
    "ORDER_FULFILMENT",
    "check_order_effects",
    "order_agents",
    "order_fulfilment_app",
]


def _items(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"sku": i["sku"], "quantity": i["quantity"]} for i in order["items"]]


def reservation_facts(order: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Reserve exactly the order's items, priced in its currency."""
    return {"order_id": order["order_id"], "items": _items(order), "currency": order["currency"]}


def reserved_total(done: Mapping[str, Mapping[str, Any]]) -> tuple[int, str]:
    """What the order costs: the total and currency the inventory service priced the
    reservation at, from the catalogue (never the prices the order states)."""
    reservation = done["inventory"]
    try:
        return int(reservation["total_cents"]), str(reservation["currency"])
    except KeyError as exc:
        raise WorkflowDefinitionError(
            f"the inventory step's result has no {exc.args[0]!r}: the order workflow charges the total the "
            "inventory service priced the reservation at; run it against a service that answers with "
            "total_cents and currency (the order sandbox does)"
        ) from exc


def charge_facts(order: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Charge the reservation's catalogue total, in its currency, to the order's payment method."""
    total, currency = reserved_total(done)
    return {
        "order_id": order["order_id"],
        "amount_cents": total,
        "currency": currency,
        "payment_method": order["payment_method"],
    }


def shipment_facts(order: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Ship the order's items to its address."""
    return {"order_id": order["order_id"], "address": order["shipping_address"], "items": _items(order)}


def payment_approval(
    order: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]], parameters: Mapping[str, Any]
) -> str | None:
    """A person approves a charge above ``parameters["approval_threshold_cents"]`` (no
    threshold: no approvals); the charge is the reservation's catalogue total."""
    threshold = parameters.get("approval_threshold_cents")
    if threshold is None:
        return None
    total, _ = reserved_total(done)
    if total <= int(threshold):
        return None
    return f"the total {total} cents is above the approval threshold of {threshold} cents"


ORDER_FULFILMENT = Workflow(
    name="order-fulfilment",
    description="Reserve stock, take payment, schedule the shipment; undo in reverse on failure.",
    input_model=Order,
    id_field="order_id",
    started_event="OrderPlaced",
    completed_event="OrderCompleted",
    cancelled_event="OrderCancelled",
    steps=(
        Step(
            name="inventory",
            agent="inventory",
            action="reserve_stock",
            compensation="release_stock",
            events=StepEvents(
                succeeded="InventoryReserved", failed="InventoryReservationFailed", compensated="InventoryReleased"
            ),
            description="Reserve stock for every item of the order.",
            facts=reservation_facts,
        ),
        Step(
            name="payment",
            agent="payment",
            action="charge_payment",
            compensation="refund_payment",
            events=StepEvents(succeeded="PaymentProcessed", failed="PaymentFailed", compensated="PaymentRefunded"),
            description="Charge the order total to the customer's payment method.",
            facts=charge_facts,
            approval=payment_approval,
        ),
        Step(
            name="shipping",
            agent="shipping",
            action="schedule_shipment",
            compensation="cancel_shipment",
            events=StepEvents(succeeded="ShipmentScheduled", failed="ShipmentFailed", compensated="ShipmentCancelled"),
            description="Schedule the shipment of the order's items to its address.",
            facts=shipment_facts,
        ),
    ),
)

INSTRUCTIONS = {
    "inventory": (
        "You are the inventory agent of a shop. You reserve stock for orders by calling your tool. "
        "Use exactly the order id, items and currency you are given; never invent items or quantities."
    ),
    "payment": (
        "You are the payment agent of a shop. You charge customers by calling your tool. "
        "Charge exactly the amount, currency and payment method you are given; never round or guess."
    ),
    "shipping": (
        "You are the shipping agent of a shop. You schedule shipments by calling your tool. "
        "Use exactly the order id, address and items you are given."
    ),
}

_OWNED_TOOLS = {
    "inventory": ("reserve_stock", "release_stock"),
    "payment": ("charge_payment", "refund_payment"),
    "shipping": ("schedule_shipment", "cancel_shipment"),
}


def order_agents(
    *,
    client: httpx.AsyncClient,
    model: BaseChatModel | Mapping[str, BaseChatModel] | None = None,
    urls: ServiceUrls | None = None,
) -> list[Agent]:
    """The three order agents, their tools calling the services through ``client``.

    ``model`` is one chat model for all agents, or a mapping agent name -> model
    (agents not named get the scripted fake). Default: the scripted fake, which
    follows its task exactly.
    """
    tools = order_tools(client=client, urls=urls or ServiceUrls())
    agents = []
    for name, owned in _OWNED_TOOLS.items():
        chosen = model.get(name) if isinstance(model, Mapping) else model
        agents.append(
            Agent(
                name=name,
                instructions=INSTRUCTIONS[name],
                tools=[tools[t] for t in owned],
                model=chosen or ScriptedChatModel(),
            )
        )
    return agents


def check_order_effects(sandbox: SandboxState, results: Sequence[WorkflowResult]) -> list[str]:
    """Inconsistencies between the orders' outcomes and the services' state.

    A completed order holds exactly one reservation, priced at the catalogue's
    prices, one captured charge of that reservation's total in its currency, and one
    scheduled shipment, and nothing else; a compensated order holds
    nothing (whatever it made is released, refunded, cancelled) and made each kind
    of effect at most once; stock is conserved (initial stock minus held
    reservations). Returns one line per problem, empty when consistent.
    """
    problems: list[str] = []
    completed = {"reservation:held": 1, "charge:captured": 1, "shipment:scheduled": 1}
    for result in results:
        order_id = result.workflow_id
        effects = sandbox.effects_for(order_id)
        if result.status is WorkflowStatus.COMPLETED:
            if effects.counts != completed:
                problems.append(f"{order_id}: completed but holds {effects.counts}, want {completed}")
            problems += _priced_and_charged(sandbox, order_id, effects)
        elif result.status is WorkflowStatus.COMPENSATED:
            if effects.outstanding:
                problems.append(f"{order_id}: compensated but still holds {effects.outstanding}")
            repeated = {kind: n for kind, n in effects.counts.items() if n > 1}
            if repeated:
                problems.append(f"{order_id}: an effect was made more than once: {repeated}")
    held = sandbox.inventory.held()
    for sku, initial in sandbox.inventory.initial_stock.items():
        if sandbox.inventory.stock[sku] != initial - held.get(sku, 0):
            problems.append(
                f"stock of {sku} is {sandbox.inventory.stock[sku]}, want {initial} - {held.get(sku, 0)} held"
            )
    return problems


def _priced_and_charged(sandbox: SandboxState, order_id: str, effects: OrderEffects) -> list[str]:
    """A completed order's reservation is priced from the catalogue and its charge is
    exactly that total, in that currency."""
    if len(effects.reservations) != 1:
        return []  # reported as a count by the caller
    (reservation,) = effects.reservations
    prices = sandbox.inventory.unit_prices
    problems = [
        f"{order_id}: reserved {item.sku} at {item.unit_price_cents} cents, "
        f"the catalogue's price is {prices.get(item.sku)}"
        for item in reservation.items
        if item.unit_price_cents != prices.get(item.sku)
    ]
    total = sum(item.quantity * item.unit_price_cents for item in reservation.items)
    if reservation.total_cents != total:
        problems.append(f"{order_id}: the reservation totals {reservation.total_cents}, its items {total}")
    charged = [(c.amount_cents, c.currency) for c in effects.charges]
    wanted = [(reservation.total_cents, reservation.currency)]
    if charged != wanted:
        problems.append(f"{order_id}: charged {charged}, want exactly {wanted} (the reservation's catalogue total)")
    return problems


def _catalogue_context(skus: Iterable[str], unit_prices: Mapping[str, int], currency: str) -> dict[str, Any]:
    """What input validation knows of the catalogue: an order naming another SKU,
    price or currency is refused before it runs (see :class:`~agent_coordinator.examples.orders.tools.Order`)."""
    return {"known_skus": set(skus), "catalogue_prices": dict(unit_prices), "catalogue_currency": currency}


def _chosen_models(options: AppOptions) -> dict[str, BaseChatModel]:
    """Each agent's model as ``--model``/``--record``/``--replay`` say (ModelError if not)."""
    choice = parse_model_options(options.models, record=options.record, replay=options.replay)
    return choice.models(_OWNED_TOOLS)


# What reading the services' state raises when --services is not (or no longer) a
# reachable `coordinator sandbox`: transport errors, error answers, foreign bodies.
_UNREACHABLE = (httpx.HTTPError, ValueError, KeyError, TypeError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.url} answered {exc.response.status_code}; is it a `coordinator sandbox`?"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"not a `coordinator sandbox` answer ({type(exc).__name__}: {exc})"


@asynccontextmanager
async def _order_environment(options: AppOptions) -> AsyncIterator[AppEnvironment]:
    """Agents over in-process services (kept in ``options.store`` when given) or over
    services served elsewhere at ``options.services`` (``coordinator sandbox``), with
    the models ``options.models`` name (recorded or replayed as ``options`` say)."""
    models = _chosen_models(options)
    if options.services:
        base_url = options.services.rstrip("/")
        async with httpx.AsyncClient(timeout=30.0) as client:
            try:
                # Only the catalogue is needed up front, not every record the services hold.
                remote = await RemoteSandboxState.fetch(client, base_url, order_ids=())
            except _UNREACHABLE as exc:
                raise CoordinatorError(
                    f"cannot use the services at --services {options.services}: {_describe(exc)}; start them "
                    "with `coordinator sandbox --port 8700` (or point --services at where they run)"
                ) from exc

            async def check_remote(results: Sequence[WorkflowResult]) -> list[str]:
                try:
                    state = await RemoteSandboxState.fetch(client, base_url, order_ids=[r.workflow_id for r in results])
                except _UNREACHABLE as exc:
                    # The runs are done: an unreachable check is reported, not raised.
                    return [f"could not check the services at {base_url} after the runs: {_describe(exc)}"]
                return check_order_effects(state, results)

            yield AppEnvironment(
                agents=order_agents(client=client, model=models, urls=ServiceUrls.at(base_url)),
                validation_context=_catalogue_context(
                    remote.inventory.initial_stock, remote.inventory.unit_prices, remote.inventory.currency
                ),
                check=check_remote,
            )
        return
    scenario = Scenario.from_file(options.scenario) if options.scenario else Scenario.default()
    if options.transient_rate or options.seed:
        scenario = scenario.model_copy(update={"transient_rate": options.transient_rate, "seed": options.seed})
    sandbox = Sandbox(scenario, store=options.store)
    try:
        async with sandbox.client() as client:

            async def check_local(results: Sequence[WorkflowResult]) -> list[str]:
                sandbox.reload()  # other processes may have written the store
                return check_order_effects(sandbox, results)

            yield AppEnvironment(
                agents=order_agents(client=client, model=models),
                validation_context=_catalogue_context(
                    scenario.catalogue, sandbox.inventory.unit_prices, sandbox.inventory.currency
                ),
                check=check_local,
                extras={
                    "sandbox": sandbox,
                    SERVICE_ATTEMPTS: lambda: sum(c.attempts for c in sandbox.counters.values()),
                },
            )
    finally:
        sandbox.close()


#: The flagship app: ``coordinator run examples/orders/orders.jsonl`` runs this.
order_fulfilment_app = WorkflowApp(
    workflow=ORDER_FULFILMENT,
    environment=_order_environment,
    parameters=(
        Parameter(
            "approval_threshold_cents",
            int,
            default=None,
            description="a charge above this many cents waits for a person's approval; not set: none waits",
        ),
    ),
    lab="agent_coordinator.examples.orders.lab:hooks",
    services="agent_coordinator.examples.orders.sandbox.server:serve_services",
)
