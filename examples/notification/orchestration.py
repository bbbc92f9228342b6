"""Orchestration: notifying the customer is a fourth step of the order workflow.

The supervisor only runs what the workflow lists, so the change is a new step (with
its agent, its tool and its three events), a new workflow that ends with it, and an
app that hands the orchestrator the new agent. Run it with::

    coordinator run examples/orders/orders.jsonl --workflow examples.notification.orchestration:app

Every order now takes one more model call, and a notification that fails cancels the
order (refund, release, cancel): a step is all or nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from pydantic import BaseModel

from agent_coordinator import Step, StepEvents, Workflow, tool_call_context
from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.core.agent import Agent
from agent_coordinator.core.app import AppEnvironment, AppOptions, WorkflowApp
from agent_coordinator.examples.notification.service import Notifications
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_fulfilment_app


class NotifyArgs(BaseModel):
    order_id: str
    to: str
    text: str


def notifier_agent(service: Notifications) -> Agent:
    async def send_notification(order_id: str, to: str, text: str, config: RunnableConfig) -> dict[str, Any]:
        return service.send(tool_call_context(config).idempotency_key, order_id=order_id, to=to, text=text)

    tool = StructuredTool.from_function(
        coroutine=send_notification,
        name="send_notification",
        description="Message the customer.",
        args_schema=NotifyArgs,
    )
    return Agent(name="notifier", instructions="You notify customers.", tools=[tool], model=ScriptedChatModel())


def notify_facts(order: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    shipment = done["shipping"]
    text = f"Order {order['order_id']} ships with {shipment['carrier']} in {shipment['eta_days']} days."
    return {"order_id": order["order_id"], "to": order["customer"], "text": text}


NOTIFY = Step(
    name="notify",
    agent="notifier",
    action="send_notification",
    events=StepEvents(succeeded="CustomerNotified", failed="NotificationFailed", compensated="NotificationRetracted"),
    description="Tell the customer the order ships.",
    facts=notify_facts,
)

WORKFLOW = Workflow.model_validate({**dict(ORDER_FULFILMENT), "steps": (*ORDER_FULFILMENT.steps, NOTIFY)})

NOTIFICATIONS = Notifications()


@asynccontextmanager
async def _environment(options: AppOptions) -> AsyncIterator[AppEnvironment]:
    async with order_fulfilment_app.environment(options) as env:
        yield replace(env, agents=[*env.agents, notifier_agent(NOTIFICATIONS)])


# The payment step keeps its approval rule, so the order app's parameters apply.
app = WorkflowApp(workflow=WORKFLOW, environment=_environment, parameters=order_fulfilment_app.parameters)
