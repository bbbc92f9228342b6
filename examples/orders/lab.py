"""The order domain as the lab needs it (:class:`~agent_coordinator.lab.hooks.LabHooks`):
the sandbox scenario a fault plan asks for, business failures by the services' own
rules, the money and stock invariants, and the notification step added in each mode.

Named by the order app (``lab="agent_coordinator.examples.orders.lab:hooks"``) and
imported only when the lab runs.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_coordinator.bus import InMemoryBus
from agent_coordinator.core.app import AppEnvironment, AppOptions
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.examples.notification import choreography as notification_choreography
from agent_coordinator.examples.notification import orchestration as notification_orchestration
from agent_coordinator.examples.notification import service as notification_service
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_fulfilment_app
from agent_coordinator.examples.orders.faults import sabotage_order
from agent_coordinator.examples.orders.invariants import check_orders
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.examples.orders.sandbox.scenario import Scenario
from agent_coordinator.lab.compare import ChangeSize, count_code_lines
from agent_coordinator.lab.faults import FaultPlan, Saboteur
from agent_coordinator.lab.invariants import InvariantReport
from agent_coordinator.modes import Choreography, open_coordinator

__all__ = ["OrderLab", "hooks", "order_scenario"]

NOTIFICATION = {"orchestration": notification_orchestration, "choreography": notification_choreography}


def order_scenario(plan: FaultPlan, base: Scenario | None = None) -> Scenario:
    """``base`` (default: the default scenario) with ``plan``'s transient rate, seed and
    latency."""
    base = base if base is not None else Scenario.default()
    return base.model_copy(
        update={"transient_rate": plan.transient_rate, "seed": plan.seed, "latency_ms": plan.latency_ms}
    )


class OrderLab:
    """:class:`~agent_coordinator.lab.hooks.LabHooks` of the order app."""

    saboteur: Saboteur | None = staticmethod(sabotage_order)

    def options(self, plan: FaultPlan, inputs: Sequence[Mapping[str, Any]], directory: Path) -> AppOptions:
        """The sandbox scenario for ``plan``, with the stock of every SKU that has any
        raised to the workload's demand (so only faults and the inputs' own failures
        fail orders), written as JSON into ``directory``."""
        return AppOptions(
            seed=plan.seed, transient_rate=plan.transient_rate, scenario=_scenario_file(plan, inputs, directory)
        )

    def judge(
        self,
        workflow: Workflow,
        env: AppEnvironment,
        runs: Mapping[str, Sequence[Event]],
        results: Sequence[WorkflowResult],
    ) -> InvariantReport | None:
        """The generic invariants plus the money and stock rules over the in-process
        sandbox (None when the services run elsewhere: the app's ``check`` judges them)."""
        sandbox = env.extras.get("sandbox")
        if not isinstance(sandbox, Sandbox):
            return None
        return check_orders(
            workflow, sandbox, {k: list(v) for k, v in runs.items()}, results=results, counters=sandbox.counters
        )

    async def changes(self, inputs: Sequence[Mapping[str, Any]], directory: Path) -> list[ChangeSize]:
        """The two notification changes (``examples/notification``), measured and run."""
        return await _notification_changes(inputs, directory)


hooks = OrderLab()


def _scenario_file(plan: FaultPlan, inputs: Sequence[Mapping[str, Any]], directory: Path) -> str:
    """The sandbox scenario for ``plan``, with the stock of every SKU that has any
    raised to the workload's demand (so only faults and the inputs' own failures fail
    orders), written as JSON; its path."""
    base = Scenario.default()
    demand: Counter[str] = Counter()
    for item in inputs:
        for line in item.get("items") or []:
            if isinstance(line, Mapping) and "sku" in line:
                demand[str(line["sku"])] += int(line.get("quantity", 0))
    catalogue = {
        sku: entry.model_copy(update={"stock": max(entry.stock, demand[sku])}) if entry.stock else entry
        for sku, entry in base.catalogue.items()
    }
    scenario = order_scenario(plan, base.model_copy(update={"catalogue": catalogue}))
    path = directory / f"scenario-{uuid.uuid4().hex[:8]}.json"
    path.write_text(scenario.model_dump_json(), encoding="utf-8")
    return str(path)


async def _notification_changes(raw: Sequence[Mapping[str, Any]], directory: Path) -> list[ChangeSize]:
    """Measure and run the two notification examples over ``raw`` (order inputs)."""
    plan = FaultPlan()
    options = OrderLab().options(plan, raw, directory)

    # Orchestration: the extended workflow, with the notifier agent.
    sent = notification_service.Notifications()
    async with order_fulfilment_app.environment(options) as env:
        agents = [*env.agents, notification_orchestration.notifier_agent(sent)]
        async with open_coordinator(
            notification_orchestration.WORKFLOW, agents=agents, mode="orchestration"
        ) as coordinator:
            results = await coordinator.run_many(
                [notification_orchestration.WORKFLOW.validate_input(i, context=env.validation_context) for i in raw]
            )
    completed = [r for r in results if r.status is WorkflowStatus.COMPLETED]
    base_calls = 3.0
    orch_calls = sum(r.usage.model_calls for r in completed) / max(len(completed), 1) - base_calls
    orch_ok = f"{len(sent.orders())} notifications for {len(completed)} completed orders"

    # Choreography: the unchanged workflow, plus the notifier group on the same bus.
    told = notification_service.Notifications()
    async with order_fulfilment_app.environment(options) as env, InMemoryBus() as bus:
        await notification_choreography.start_notifier(bus, told)
        async with open_coordinator(ORDER_FULFILMENT, agents=env.agents, mode=Choreography(bus=bus)) as coordinator:
            results = await coordinator.run_many(
                [ORDER_FULFILMENT.validate_input(i, context=env.validation_context) for i in raw]
            )
            await bus.wait_idle()
    done = [r for r in results if r.status is WorkflowStatus.COMPLETED]
    chor_ok = f"{len(told.orders())} notifications for {len(done)} completed orders"
    notify = notification_orchestration.NOTIFY
    return [
        _change(
            "orchestration",
            new_event_types=[notify.events.succeeded, notify.events.failed, notify.events.compensated],
            extra_model_calls_per_order=round(orch_calls, 2),
            failure_effect="a failed notification fails the saga: the order is refunded, released and cancelled",
            verified=orch_ok,
        ),
        _change(
            "choreography",
            new_event_types=[],
            extra_model_calls_per_order=0.0,
            failure_effect="a failed notification is redelivered, then dead-lettered; the order is unaffected",
            verified=chor_ok,
        ),
    ]


def _change(mode: str, **effects: Any) -> ChangeSize:
    """The notification change of ``mode``, sized from the very module that makes it
    (one new file, no existing file edited), with what running it showed."""
    path = Path(NOTIFICATION[mode].__file__ or "")
    code_lines, total_lines = count_code_lines(path)
    return ChangeSize(
        mode=mode,
        files=[f"examples/notification/{path.name}"],
        code_lines=code_lines,
        total_lines=total_lines,
        existing_files=0,
        **effects,
    )
