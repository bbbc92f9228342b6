"""Running one step with its agent: the model chooses, the guard checks, the tool acts.

:class:`StepRunner` is what both coordinators call to do or undo a step, so a step
behaves the same under orchestration and choreography:

1. the agent's model gets its instructions and a structured task message (the step's
   facts, see :mod:`agent_coordinator.core.task`) with only the agent's *action* tools bound;
2. the guard (:mod:`agent_coordinator.core.guard`) checks the answer: exactly one
   tool call; a tool of this agent; this step's action; arguments valid against the
   tool's schema; values equal to the workflow's facts. A refused answer is sent back to the model as an error naming
   what was wrong, and the model is re-asked, at most ``max_reasks`` times;
3. the tool runs with a :class:`~agent_coordinator.core.context.ToolCallContext` (so it sends an
   idempotency key); transient failures are retried with bounded backoff; a business
   failure or exhausted retries fail the step.

A model that gives no answer at all -- unreachable, overloaded or rate-limited after
the retries of :func:`ask_model`, timed out, refusing our credentials -- is an
outage of ours, not the business's answer: :meth:`StepRunner.model_unavailable`
applies ``RunSettings.on_model_unavailable`` (stop the run, resumable; or fail the
step but mark the run for attention).

Compensation is never a model's decision: :meth:`StepRunner.compensate` calls the
step's compensation tool directly with arguments taken from the step's recorded
result, retrying transient failures with its own (longer) backoff.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ValidationError

from agent_coordinator.core import telemetry
from agent_coordinator.core.agent import Agent
from agent_coordinator.core.context import ToolCallContext
from agent_coordinator.core.errors import (
    InvalidArguments,
    ModelUnavailable,
    StepError,
    TransientFailure,
    WorkflowDefinitionError,
)
from agent_coordinator.core.guard import check_tool_call, json_normal
from agent_coordinator.core.model_errors import is_transient_model_error, redact_secrets
from agent_coordinator.core.results import Usage
from agent_coordinator.core.saga import StepReport
from agent_coordinator.core.settings import Backoff, RunSettings
from agent_coordinator.core.task import render_task
from agent_coordinator.core.workflow import Step, Workflow

__all__ = ["StepRunner", "ask_model"]

log = logging.getLogger(__name__)

RESERVED_NODE_NAMES = frozenset({"supervisor", "compensate", "accept", "__start__", "__end__"})

#: HTTP statuses after which a model cannot be used by anyone until the deployment
#: changes (our key, our permissions, our model name): no retry helps, but neither
#: is it the business's answer to this run.
_UNUSABLE_STATUSES = frozenset({401, 403, 404})

ATTENTION_AFTER_OUTAGE = (
    "it was not refused: its model could not be reached, and the completed steps were undone because "
    "on_model_unavailable is 'compensate'; submit it again once the model is back if it should go through"
)
"""The note a run unwound after a model outage ends ``needs_attention`` with."""


async def ask_model(
    model: Runnable[Any, BaseMessage],
    messages: list[BaseMessage],
    *,
    backoff: Backoff,
    key: str,
    who: str,
    config: RunnableConfig | None = None,
) -> AIMessage:
    """One answer of ``model`` to ``messages``; failed calls that may pass are retried
    with ``backoff`` (``key`` names the call for jitter and logs; ``who`` the model's
    owner in messages, e.g. ``agent 'payment'``).

    Raises:
        ModelUnavailable: no answer: every attempt failed with an error that may
            pass (connection refused, DNS, timeouts, 5xx, 429 -- see
            :func:`agent_coordinator.core.model_errors.is_transient_model_error`), or the provider refused
            our credentials, permissions or model name (401, 403, 404).
        StepError: the call failed for this request alone (a request the provider
            rejects, a cassette replay miss) or the answer is not an AIMessage.

    Messages quote the provider's error with secrets redacted. ``config`` (callbacks,
    tags, metadata) goes to the model's ``ainvoke``.
    """
    name = str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)
    # The span records an exception leaving it (and marks itself failed): the messages
    # raised below are redacted already.
    with telemetry.span(
        f"chat {name}",
        kind=telemetry.SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": name, "gen_ai.agent.name": who},
    ) as current:
        for attempt in range(1, backoff.max_attempts + 1):
            try:
                answer = await model.ainvoke(messages, config=config)
            except Exception as exc:  # a provider's own error types are unknown here
                # Provider messages may quote a key; they go to logs and events only redacted.
                detail = redact_secrets(f"{type(exc).__name__}: {exc}")
                status = _status_of(exc)
                if status in _UNUSABLE_STATUSES:
                    raise ModelUnavailable(
                        f"the model of {who} refused our configuration (HTTP {status}): {detail}; fix the key, "
                        "permissions or model name"
                    ) from exc
                if not is_transient_model_error(exc):  # a request refused as such, a replay miss
                    raise StepError(f"model call failed: {detail}") from exc
                if attempt == backoff.max_attempts:
                    raise ModelUnavailable(
                        f"the model of {who} could not be reached: {attempt} calls failed, last: {detail}"
                    ) from exc
                log.warning("model call failed (%s), retrying: %s", key, detail)
                await asyncio.sleep(backoff.delay(attempt, key=key))
                continue
            if not isinstance(answer, AIMessage):
                raise TransientFailure(f"model returned {type(answer).__name__}, expected an AIMessage")
            usage = _usage_of(answer)
            current.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            current.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            return answer
    raise AssertionError("unreachable")  # pragma: no cover


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a provider's error: its ``status_code`` (OpenAI and Anthropic
    SDKs), else its httpx ``response``'s."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class StepRunner:
    """A workflow bound to its agents, ready to do and undo steps.

    Construction validates the pairing and raises :class:`WorkflowDefinitionError`
    naming the step and the missing agent or tool. Safe to share between concurrent
    runs: it holds no per-run state.
    """

    def __init__(
        self,
        workflow: Workflow,
        agents: Sequence[Agent],
        *,
        settings: RunSettings | None = None,
        callbacks: Sequence[BaseCallbackHandler] = (),
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.workflow = workflow
        self.settings = settings or RunSettings()
        # LangChain's tracing (callbacks; LangSmith by environment) sees every model
        # and tool run with the workflow id, step and agent in its metadata.
        self.callbacks = list(callbacks)
        self.tags = list(tags)
        self.metadata = dict(metadata or {})
        self._traced = bool(self.callbacks) or _tracing_by_environment()
        self.agents: dict[str, Agent] = {}
        for agent in agents:
            if agent.name in self.agents:
                raise WorkflowDefinitionError(f"two agents are named {agent.name!r}; agent names must be unique")
            if agent.name in RESERVED_NODE_NAMES:
                raise WorkflowDefinitionError(
                    f"agent name {agent.name!r} is reserved; rename it (reserved: {sorted(RESERVED_NODE_NAMES)})"
                )
            self.agents[agent.name] = agent
        actions: dict[str, list[BaseTool]] = {}
        for step in workflow.steps:
            if step.agent not in self.agents:
                raise WorkflowDefinitionError(
                    f"step {step.name!r} of workflow {workflow.name!r} names agent {step.agent!r}, "
                    f"but no such agent was given; agents: {sorted(self.agents)}"
                )
            agent = self.agents[step.agent]
            actions.setdefault(agent.name, [])
            action = _step_tool(agent, step, step.action, "action")
            if action not in actions[agent.name]:
                actions[agent.name].append(action)
            if step.compensation is not None:
                _step_tool(agent, step, step.compensation, "compensation")
        self._agent_of = {step.name: step.agent for step in workflow.steps}  # a tool call's context names its step
        # By the tool object, not its name: two agents may own different tools of one name.
        self._direct_calls: dict[int, _DirectCall | None] = {}
        # The model only ever sees action tools: compensation is not its decision.
        self._offered: dict[str, list[str]] = {name: sorted(t.name for t in tools) for name, tools in actions.items()}
        self._bound: dict[str, Runnable[Any, BaseMessage]] = {
            name: self.agents[name].model.bind_tools(tools) for name, tools in actions.items()
        }

    def agent_for(self, step: Step) -> Agent:
        return self.agents[step.agent]

    # -- doing -------------------------------------------------------------------------

    async def perform(
        self,
        step: Step,
        *,
        workflow_id: str,
        input: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
    ) -> StepReport:
        """Do ``step`` for run ``workflow_id``: model call(s), guard, tool call.

        Never raises for a failure of the step itself (business, transient after
        retries, model misbehaviour after re-asks, running past
        ``settings.step_timeout``): those come back as a report with ``ok=False`` and
        a reason naming what went wrong. A model that gives no answer (see
        :func:`ask_model`, or still silent when the step's time runs out) comes back
        as :meth:`model_unavailable` says.
        """
        timeout = self.settings.step_timeout
        in_flight: dict[str, Any] = {}
        attributes = {"coordinator.workflow_id": workflow_id, "coordinator.step": step.name}
        with telemetry.span(f"step {step.name}", attributes=attributes | {"gen_ai.agent.name": step.agent}) as current:
            try:
                async with asyncio.timeout(timeout):
                    report = await self._perform(
                        step, workflow_id=workflow_id, input=input, results=results, in_flight=in_flight
                    )
            except TimeoutError:
                report = await self._timed_out(step, in_flight)
            outcome = "stopped" if report.stopped else "ok" if report.ok else "failed"
            current.set_attribute("coordinator.outcome", outcome)
            if not report.ok:
                telemetry.failed(current, report.reason or "failed")
            return report

    async def _timed_out(self, step: Step, in_flight: Mapping[str, Any]) -> StepReport:
        """The report of ``step`` when its time (``settings.step_timeout``) ran out, by
        what was ``in_flight``."""
        timeout = self.settings.step_timeout
        if "asking" in in_flight:  # the time ran out waiting for the model: our outage
            return self.model_unavailable(
                f"the model of agent {step.agent!r} gave no answer within the step's timeout of {timeout:g}s"
            )
        reason = f"step {step.name!r} took longer than its timeout of {timeout:g}s"
        if not in_flight:
            return StepReport(ok=False, reason=reason)
        return await self._settle_timed_out_call(step, reason, in_flight, timeout)

    async def _settle_timed_out_call(
        self, step: Step, reason: str, in_flight: Mapping[str, Any], budget: float | None
    ) -> StepReport:
        """A step timed out while its tool call was in flight: the effect may or may
        not have happened. Settle it (:meth:`_undo_if_done`) within ``budget``: the
        failed step is not in the saga's undo chain, so a late effect is undone now."""
        tool, arguments, context = in_flight["tool"], in_flight["arguments"], in_flight["context"]
        settled, undo = await self._undo_if_done(step, tool, arguments, context, Backoff(max_attempts=1), budget)
        if settled == "unknown":
            return StepReport(ok=False, reason=f"{reason}; whether its effect happened is unknown", uncertain=True)
        if settled == "refused":
            return StepReport(ok=False, reason=reason)
        if settled == "held":
            return StepReport(ok=False, reason=f"{reason}; its late effect could not be undone: {undo.reason}")
        return StepReport(ok=False, reason=f"{reason}; its late effect was undone")

    async def undo_abandoned(
        self,
        step: Step,
        *,
        workflow_id: str,
        input: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
    ) -> StepReport:
        """Make sure an attempt of ``step`` abandoned by a dead process holds nothing.

        The run has moved on without the step (its deadline failed it), so nothing in
        the saga will undo it. The action is asked again with the same idempotency key
        and the step's facts -- a service that did it answers with the first result
        and does nothing again; one that did not does it now -- and whatever result
        comes back is undone at once. ``ok`` is True when nothing is left held (the
        action was refused: it never happened; or it was undone); otherwise ``reason``
        says what may still be held.
        """
        tool = self.agents[step.agent].tool(step.action)
        facts = json_normal(self._facts(step, tool, input, results))
        context = ToolCallContext(workflow_id, step.name, step.action)
        settled, undo = await self._undo_if_done(step, tool, facts, context, self.settings.tool_retries, None)
        if settled == "unknown":
            return StepReport(ok=False, reason=f"whether an abandoned {step.action} took effect is unknown")
        if settled == "refused":
            return StepReport(ok=True)  # the abandoned attempt made nothing either
        if settled == "held":
            return StepReport(ok=False, reason=f"an abandoned {step.action} could not be undone: {undo.reason}")
        return StepReport(ok=True, result=undo.result)

    async def _undo_if_done(
        self,
        step: Step,
        tool: BaseTool,
        arguments: Mapping[str, Any],
        context: ToolCallContext,
        backoff: Backoff,
        budget: float | None,
    ) -> tuple[Literal["unknown", "refused", "held", "undone"], StepReport]:
        """Find out whether an attempt of ``step`` whose outcome was lost took effect,
        and undo it if so: the action is asked again with the same idempotency key (a
        service that did it answers with its first result and does nothing again),
        within ``budget`` seconds, and whatever result comes back is compensated.

        Returns how it settled -- ``unknown`` (still no answer), ``refused`` (it never
        took effect), ``held`` (it did and the undo failed: the report's ``reason``),
        ``undone`` -- with the undo's report, whose ``result`` is the replayed
        action's result (for the callers' messages; empty unless an undo ran)."""
        try:
            async with asyncio.timeout(budget):
                replay = await self._call_tool(tool, arguments, context, backoff)
        except TimeoutError:
            return "unknown", StepReport(ok=False)
        if not replay.ok or replay.result is None:
            # A refusal means the effect did not happen; a call that still cannot get
            # through leaves it unknown.
            return ("unknown" if replay.uncertain else "refused"), StepReport(ok=False)
        undo = await self.compensate(step, workflow_id=context.workflow_id, result=replay.result)
        return ("undone" if undo.ok else "held"), StepReport(ok=undo.ok, result=replay.result, reason=undo.reason)

    async def _perform(
        self,
        step: Step,
        *,
        workflow_id: str,
        input: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
        in_flight: dict[str, Any],
    ) -> StepReport:
        agent = self.agents[step.agent]
        tool = agent.tool(step.action)
        facts = json_normal(self._facts(step, tool, input, results))
        messages: list[BaseMessage] = [
            SystemMessage(agent.instructions),
            HumanMessage(
                render_task(
                    workflow=self.workflow.name,
                    workflow_id=workflow_id,
                    step=step.name,
                    description=step.description,
                    tool=step.action,
                    arguments=facts,
                )
            ),
        ]
        usage = Usage()
        rejections: list[str] = []
        model = self._bound[agent.name]
        for _ in range(self.settings.max_reasks + 1):
            in_flight["asking"] = True  # a timeout now is the model's silence
            try:
                answer = await ask_model(
                    model,
                    messages,
                    backoff=self.settings.tool_retries,
                    key=f"{workflow_id}/{step.name}/model",
                    who=f"agent {agent.name!r}",
                    config=self.run_config(workflow_id, step.name, agent.name),
                )
            except ModelUnavailable as exc:
                return self.model_unavailable(exc.reason, usage=usage, rejections=tuple(rejections))
            except StepError as exc:
                return StepReport(ok=False, reason=exc.reason, usage=usage, rejections=tuple(rejections))
            del in_flight["asking"]  # not in a `finally`: a timeout must still see it
            usage = usage + _usage_of(answer)
            arguments, problem = check_tool_call(
                answer,
                step=step,
                tool=tool,
                facts=facts,
                owned={t.name for t in agent.tools},
                offered=self._offered[agent.name],
            )
            if problem is None:
                break
            rejections.append(problem)
            messages.append(answer)
            if answer.tool_calls:
                # Every tool call must be answered, or chat APIs refuse the next request.
                for call in answer.tool_calls:
                    messages.append(ToolMessage(f"Error: {problem}", tool_call_id=call.get("id") or ""))
            else:
                messages.append(HumanMessage(f"Error: {problem}"))
        else:
            reason = f"model of agent {agent.name!r} misbehaved {len(rejections)} times: {rejections[-1]}"
            return StepReport(ok=False, reason=reason, usage=usage, rejections=tuple(rejections))
        context = ToolCallContext(workflow_id, step.name, step.action)
        in_flight.update(tool=tool, arguments=arguments, context=context)  # for a timeout to settle
        report = await self._call_tool(tool, arguments, context, self.settings.tool_retries)
        return StepReport(
            ok=report.ok,
            result=report.result,
            reason=report.reason,
            usage=usage + report.usage,
            rejections=tuple(rejections),
        )

    def model_unavailable(
        self, reason: str, *, usage: Usage | None = None, rejections: tuple[str, ...] = ()
    ) -> StepReport:
        """What a step reports when its model gave no answer (``reason`` says whose
        and why), by ``settings.on_model_unavailable``: ``"stop"`` -- a stopped
        report (the run stops, nothing undone, resumable); ``"compensate"`` -- a
        failure marked for attention (the completed steps are undone and the run
        ends ``needs_attention``). Never a plain failure: an outage of ours is not
        the business's answer."""
        usage = usage or Usage()
        if self.settings.on_model_unavailable == "stop":
            return StepReport(ok=False, stopped=True, reason=reason, usage=usage, rejections=rejections)
        return StepReport(ok=False, reason=reason, usage=usage, rejections=rejections, attention=ATTENTION_AFTER_OUTAGE)

    # -- undoing -----------------------------------------------------------------------

    async def compensate(self, step: Step, *, workflow_id: str, result: Mapping[str, Any]) -> StepReport:
        """Undo ``step`` of run ``workflow_id`` given its recorded ``result``.

        A step without a compensation tool reports ``ok`` with no result: there is
        nothing to undo. Transient failures are retried with
        ``settings.compensation_retries``; a report with ``ok=False`` means the undo
        could not complete and a person must look.
        """
        if step.compensation is None:
            return StepReport(ok=True, result=None)
        agent = self.agents[step.agent]
        tool = agent.tool(step.compensation)
        if step.compensation_facts is not None:
            arguments = dict(step.compensation_facts(result))
        else:
            accepted = _schema_fields(tool)
            arguments = {k: v for k, v in result.items() if accepted is None or k in accepted}
        context = ToolCallContext(workflow_id, step.name, step.compensation)
        attributes = {"coordinator.workflow_id": workflow_id, "coordinator.step": step.name}
        with telemetry.span(f"compensate {step.name}", attributes=attributes) as current:
            report = await self._call_tool(tool, arguments, context, self.settings.compensation_retries)
            if not report.ok:
                telemetry.failed(current, report.reason or "failed")
            return report

    # -- parts -------------------------------------------------------------------------

    def run_config(self, workflow_id: str, step: str, agent: str) -> RunnableConfig:
        """The LangChain config of a model or tool run: the caller's callbacks and tags,
        and metadata naming the workflow id (also as ``thread_id``: LangSmith groups a
        workflow's runs, from every process, into one thread), step and agent."""
        config: RunnableConfig = {
            "tags": [*self.tags, f"agent:{agent}", f"step:{step}"],
            "metadata": {
                **self.metadata,
                "workflow": self.workflow.name,
                "workflow_id": workflow_id,
                "thread_id": workflow_id,
                "step": step,
                "agent": agent,
            },
            "run_name": f"{agent}: {step}",
        }
        if self.callbacks:
            config["callbacks"] = self.callbacks
        return config

    def _direct(self, tool: BaseTool) -> _DirectCall | None:
        """A way to await ``tool``'s coroutine without LangChain's per-call machinery,
        or None when ``tool`` must go through ``ainvoke`` (see ``direct_tool_calls``;
        a traced runner always goes through it, so that tool runs are traced too)."""
        if not self.settings.direct_tool_calls or self._traced:
            return None
        key = id(tool)  # the agents hold their tools for the runner's lifetime: ids stay unique
        if key not in self._direct_calls:
            self._direct_calls[key] = _direct_call(tool)
        return self._direct_calls[key]

    def _facts(
        self, step: Step, tool: BaseTool, input: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
    ) -> Mapping[str, Any]:
        if step.facts is not None:
            return step.facts(input, results)
        accepted = _schema_fields(tool)
        return {k: v for k, v in input.items() if accepted is None or k in accepted}

    async def _call_tool(
        self, tool: BaseTool, arguments: Mapping[str, Any], context: ToolCallContext, backoff: Backoff
    ) -> StepReport:
        """Call ``tool``, retrying transient failures; never raises for a step failure."""
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "coordinator.workflow_id": context.workflow_id,
            "coordinator.step": context.step,
        }
        with telemetry.span(f"execute_tool {tool.name}", attributes=attributes) as current:
            report = await self._attempts(tool, arguments, context, backoff)
            current.set_attribute("coordinator.tool_calls", report.usage.tool_calls)
            if not report.ok:
                telemetry.failed(current, report.reason or "failed")
            return report

    async def _attempts(
        self, tool: BaseTool, arguments: Mapping[str, Any], context: ToolCallContext, backoff: Backoff
    ) -> StepReport:
        """The calls of :meth:`_call_tool`, retried with ``backoff``."""
        calls = 0
        reason = ""
        for attempt in range(1, backoff.max_attempts + 1):
            calls += 1
            try:
                direct = self._direct(tool)
                if direct is not None:
                    output = await direct(arguments, context)
                else:
                    config = self.run_config(context.workflow_id, context.step, self._agent_of[context.step])
                    config["configurable"] = context.as_config()["configurable"]
                    config["run_name"] = tool.name
                    output = await tool.ainvoke(dict(arguments), config=config)
            except StepError as exc:
                reason = exc.reason
                if not exc.retryable:
                    return StepReport(ok=False, reason=reason, usage=Usage(tool_calls=calls))
                if attempt < backoff.max_attempts:
                    await asyncio.sleep(backoff.delay(attempt, key=context.idempotency_key))
                continue
            except ValidationError as exc:
                return StepReport(
                    ok=False, reason=f"invalid arguments for `{tool.name}`: {exc}", usage=Usage(tool_calls=calls)
                )
            except Exception as exc:
                # A tool that raises something other than a StepError has a bug; the saga
                # must still end cleanly, so the step fails with the error named.
                log.exception("tool %s raised an unexpected error", tool.name)
                return StepReport(
                    ok=False,
                    reason=f"tool `{tool.name}` raised {type(exc).__name__}: {exc}",
                    usage=Usage(tool_calls=calls),
                )
            return StepReport(ok=True, result=_as_result(output), usage=Usage(tool_calls=calls))
        return StepReport(
            ok=False,
            reason=f"gave up after {calls} attempts of `{tool.name}`, last: {reason}",
            usage=Usage(tool_calls=calls),
            uncertain=True,  # only a timed-out step's settling reads this
        )


def _tracing_by_environment() -> bool:
    """Whether LangSmith traces this process by its environment variables."""
    return any(os.environ.get(v, "").lower() == "true" for v in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"))


_DirectCall = Callable[[Mapping[str, Any], ToolCallContext], Awaitable[Any]]


def _direct_call(tool: BaseTool) -> _DirectCall | None:
    """Validate with the tool's schema, then await its coroutine -- what
    ``StructuredTool.ainvoke`` does, minus the signature introspection and callback
    setup it repeats on every call (~0.4 ms; pydantic itself is ~4 µs). Only for a
    ``StructuredTool`` with a coroutine, a pydantic schema whose fields the coroutine
    takes (as named parameters, or through ``**arguments``, as a ``@step_tool``'s
    does), no other parameter but ``config``, and no callbacks of its own."""
    schema = tool.args_schema
    coroutine = getattr(tool, "coroutine", None)
    if not isinstance(tool, StructuredTool) or coroutine is None or tool.callbacks:
        return None
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return None
    parameters = inspect.signature(coroutine).parameters
    named = {name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
    takes_any = len(named) < len(parameters)
    fields = tuple(schema.model_fields)
    if not (takes_any or set(fields) <= named) or named - set(fields) - {"config"}:
        return None
    takes_config = "config" in parameters

    async def call(arguments: Mapping[str, Any], context: ToolCallContext) -> Any:
        try:
            validated = schema.model_validate(dict(arguments))
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<args>'}: {e['msg']}" for e in exc.errors())
            raise InvalidArguments(f"invalid arguments for {tool.name}: {detail}") from exc
        kwargs = {name: getattr(validated, name) for name in fields}
        if takes_config:
            kwargs["config"] = context.as_config()
        return await coroutine(**kwargs)

    return call


def _step_tool(agent: Agent, step: Step, name: str, role: str) -> BaseTool:
    try:
        return agent.tool(name)
    except WorkflowDefinitionError as exc:
        raise WorkflowDefinitionError(f"step {step.name!r}: {role} tool {name!r} not found: {exc}") from None


def _schema_fields(tool: BaseTool) -> frozenset[str] | None:
    schema = tool.args_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return frozenset(schema.model_fields)
    if isinstance(schema, dict):
        return frozenset(schema.get("properties", {}))
    return None


def _usage_of(answer: AIMessage) -> Usage:
    meta = answer.usage_metadata
    if meta is None:
        return Usage(model_calls=1)
    return Usage(model_calls=1, input_tokens=meta["input_tokens"], output_tokens=meta["output_tokens"])


def _as_result(output: Any) -> dict[str, Any]:
    if isinstance(output, dict):
        return output
    if isinstance(output, str):
        try:
            parsed = json.loads(output)
        except json.JSONDecodeError:
            return {"output": output}
        return parsed if isinstance(parsed, dict) else {"output": parsed}
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return {"output": output}
