"""``coordinator serve``: an HTTP API and a dashboard over one workflow app's runs.

The server holds one :class:`~agent_coordinator.shell.session.Session` -- the app,
its mode, its state, its bus -- opened from the same options as ``coordinator run``,
and answers from the event log, which is the record of every run whichever process
carried it (this one, or workers sharing PostgreSQL state). Runs submitted here are
carried by this process, or, for orchestration on a broker with shared state,
queued for the workers (:meth:`~agent_coordinator.core.run.Coordinator.submit`).

API (JSON; the OpenAPI schema at ``/openapi.json`` comes from the models below, and
``docs/openapi.json`` is its committed snapshot):

* ``POST /workflows/{name}/runs`` -- start a run of the workflow's input (202); the
  input's workflow id is its identity, so submitting it again answers with the same
  run (200), never a second one; an ``Idempotency-Key`` header maps to the run it
  first started (a key reused for another input is a 409);
* ``GET /runs`` (``workflow``, ``status``, ``mode``, ``limit``, ``offset``),
  ``GET /runs/{id}`` (status, steps, reason, usage, approval, timeline),
  ``GET /runs/{id}/events`` and ``GET /runs/{id}/events/stream`` (Server-Sent Events);
* ``POST /runs/{id}/approve`` and ``/reject`` (a note; the approver is the token's
  name), ``POST /runs/{id}/retry`` (carry on a run that stopped short: ``resume``);
* ``GET /dead-letters`` and ``POST /dead-letters/replay``;
* ``GET /metrics`` -- Prometheus metrics of every run the state records
  (:mod:`agent_coordinator.shell.metrics`).

Access: bearer tokens from ``$COORDINATOR_API_TOKENS`` (:func:`parse_tokens`), each
with roles -- ``viewer`` reads, ``operator`` starts, retries and replays,
``approver`` approves and rejects. No token or an unknown one: 401; a token without
the role: 403. Secrets are compared in constant time and never appear in answers
or logs. The dashboard's pages (``/``, ``/ui/...``) are static files; their script
asks for a token once and calls the API with it.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints'
# annotations at runtime, and those name things local to create_app.
import asyncio
import hmac
import json
import logging
import os
import string
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from agent_coordinator.core.errors import CoordinatorError, InvalidInput
from agent_coordinator.core.eventlog import RunRecord, canonical_order
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import StepOutcome, Usage, WorkflowResult, WorkflowStatus
from agent_coordinator.shell.metrics import RunMetrics
from agent_coordinator.shell.session import Session, status_of

__all__ = ["ROLES", "TOKENS_ENV", "Token", "create_app", "drain", "parse_tokens", "tokens_from_environment"]

log = logging.getLogger(__name__)

TOKENS_ENV = "COORDINATOR_API_TOKENS"
#: Idempotency-Keys a server remembers (the most recent ones).
IDEMPOTENCY_KEYS = 100_000
ROLES = ("viewer", "operator", "approver")
DASHBOARD = Path(__file__).parent / "dashboard"


@dataclass(frozen=True)
class Token:
    """Who a bearer token stands for and what it may do."""

    name: str
    roles: frozenset[str]
    secret: str

    def __repr__(self) -> str:  # never the secret
        return f"Token({self.name!r}, roles={sorted(self.roles)})"


def parse_tokens(text: str) -> list[Token]:
    """Tokens from ``$COORDINATOR_API_TOKENS``: entries separated by whitespace, each
    ``NAME:ROLE[,ROLE...]:SECRET`` (roles: viewer, operator, approver; every role may
    read). Raises :class:`CoordinatorError` naming the entry (by its name, never its
    secret) that is malformed."""
    tokens = []
    for number, entry in enumerate(text.split(), 1):
        name, _, rest = entry.partition(":")
        roles_text, _, secret = rest.partition(":")
        roles = frozenset(r for r in roles_text.split(",") if r)
        if not name or not secret or not roles:
            raise CoordinatorError(
                f"${TOKENS_ENV} entry {number} ({name or 'no name'}) is not NAME:ROLE[,ROLE...]:SECRET"
            )
        unknown = roles - set(ROLES)
        if unknown:
            raise CoordinatorError(
                f"${TOKENS_ENV} entry {number} ({name}) has unknown roles {sorted(unknown)}; use {', '.join(ROLES)}"
            )
        if len(secret) < 16:
            raise CoordinatorError(f"${TOKENS_ENV} entry {number} ({name}): a secret needs at least 16 characters")
        tokens.append(Token(name, roles | {"viewer"}, secret))
    return tokens


# -- the API's models -------------------------------------------------------------------


class RunSummary(BaseModel):
    """One run in a list: its latest state, as the event log records it."""

    workflow_id: str
    workflow: str
    mode: str
    run: str
    status: str
    last_event: str
    updated: datetime
    waiting_for: str | None = Field(default=None, description="the step awaiting approval, if any")


class RunPage(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class TimelineEntry(BaseModel):
    """An event of the run in causal order: its depth under its cause, its time since
    the run started, and what it says."""

    id: str
    type: str
    depth: int
    at_ms: float
    step: str | None = None
    reason: str | None = None
    usage: Usage | None = None
    by: str | None = None


class RunDetail(BaseModel):
    workflow_id: str
    workflow: str
    mode: str
    run: str
    status: str
    reason: str | None
    steps: list[StepOutcome]
    usage: Usage
    duration_ms: float
    approval: dict[str, Any] | None = Field(default=None, description="the pending approval request, if any")
    timeline: list[TimelineEntry]


class Submitted(BaseModel):
    workflow_id: str
    status: str
    created: bool = Field(description="false when the workflow id was known: the same run answers")


class Decision(BaseModel):
    note: str = Field(default="", max_length=2000, description="why, for the record")


class Accepted(BaseModel):
    workflow_id: str
    action: str


class DeadLetterOut(BaseModel):
    group: str
    error: str
    deliveries: int
    malformed: bool
    event: dict[str, Any]


class Replayed(BaseModel):
    replayed: int


# -- the app -------------------------------------------------------------------------------


def create_app(session: Session, tokens: list[Token]) -> FastAPI:
    """The ASGI app serving ``session``'s runs to the holders of ``tokens``."""

    coordinator = session.coordinator
    workflow = session.workflow_app.workflow
    saga = coordinator.saga
    event_log = session.event_log
    background: set[asyncio.Task[Any]] = set()
    # Idempotency-Key -> workflow id, the latest keys of this process (the workflow id
    # itself is the durable identity; a key only adds the check that it is reused for
    # the same input).
    keyed: OrderedDict[str, str] = OrderedDict()
    bearer = HTTPBearer(auto_error=False)

    app = FastAPI(
        title="agent-coordinator",
        description=f"Runs of workflow {workflow.name!r} ({session.options.mode}).",
        version="1",
    )
    app.state.background = background  # the runs and decisions under way: drain() waits for them

    def who(role: str) -> Any:
        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Token:
            if credentials is None:
                raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
            given = credentials.credentials.encode()
            token = next((t for t in tokens if hmac.compare_digest(t.secret.encode(), given)), None)
            if token is None:
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
            if role not in token.roles:
                raise HTTPException(403, f"{token.name} lacks the role {role!r}")
            return token

        return Depends(check)

    viewer, operator, approver = who("viewer"), who("operator"), who("approver")

    def carry(name: str, work: Any) -> None:
        """Run ``work`` in the background (the answer does not wait for the run's end)."""

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # the run's record says what happened; say it here too
                log.error("%s failed: %s", name, exc)

        task = asyncio.create_task(guarded(), name=name)
        background.add(task)
        task.add_done_callback(background.discard)

    def summary(subject: str, run_id: str, event: Event, records: Mapping[str, RunRecord]) -> RunSummary:
        record = records.get(run_id)
        status = status_of(event, session.workflow_app)
        return RunSummary(
            workflow_id=subject,
            workflow=record.workflow if record else workflow.name,
            mode=record.mode if record else session.options.mode,
            run=run_id,
            status=status,
            last_event=event.type,
            updated=event.time,
            waiting_for=event.data.get("step") if status == WorkflowStatus.AWAITING_APPROVAL.value else None,
        )

    def events_of(workflow_id: str) -> list[Event]:
        events = event_log.events(workflow_id)
        if not events:
            raise HTTPException(404, f"no run of {workflow_id!r}")
        return events

    @app.post(
        "/workflows/{name}/runs",
        response_model=Submitted,
        status_code=202,
        responses={200: {"model": Submitted}, 404: {}, 409: {}, 422: {}},
    )
    async def submit(
        name: str,
        request: Request,
        token: Annotated[Token, operator],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Any:
        """Start a run of the workflow's input (the request body, as JSON)."""
        if name != workflow.name:
            raise HTTPException(404, f"no workflow {name!r} here; this server runs {workflow.name!r}")
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(422, "the body is not JSON") from None
        try:
            item = workflow.validate_input(body, context=session.env.validation_context)
        except InvalidInput as exc:
            raise HTTPException(422, str(exc)) from None
        workflow_id = workflow.workflow_id(item)
        if idempotency_key is not None:
            first = keyed.setdefault(idempotency_key, workflow_id)
            keyed.move_to_end(idempotency_key)
            if len(keyed) > IDEMPOTENCY_KEYS:
                keyed.popitem(last=False)
            if first != workflow_id:
                raise HTTPException(409, f"Idempotency-Key already started run {first!r}, not {workflow_id!r}")
        logged = event_log.events(workflow_id)
        if logged:
            status = status_of(logged[-1], session.workflow_app)
            return JSONResponse(Submitted(workflow_id=workflow_id, status=status, created=False).model_dump(), 200)
        log.info("%s starts run %s", token.name, workflow_id)
        if session.run_queue is not None:
            await coordinator.submit(item)
        else:
            carry(f"run {workflow_id}", coordinator.run(item))
            await asyncio.sleep(0)  # let the run log its start before the answer
        return Submitted(workflow_id=workflow_id, status="submitted", created=True)

    @app.get("/runs", response_model=RunPage)
    async def runs(
        token: Annotated[Token, viewer],
        workflow_name: Annotated[str | None, Query(alias="workflow")] = None,
        status: str | None = None,
        mode: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> RunPage:
        """Every run the log knows, latest state first by workflow id; filtered."""
        records = {record.run_id: record for record in event_log.all_runs()}  # one read, not one per run
        found = [summary(subject, run_id, event, records) for subject, run_id, event in event_log.latest()]
        found = [
            r
            for r in found
            if (workflow_name is None or r.workflow == workflow_name)
            and (status is None or r.status == status)
            and (mode is None or r.mode == mode)
        ]
        return RunPage(runs=found[offset : offset + limit], total=len(found), limit=limit, offset=offset)

    @app.get("/runs/{workflow_id}", response_model=RunDetail, responses={404: {}})
    async def run_detail(workflow_id: str, token: Annotated[Token, viewer]) -> RunDetail:
        """One run: its status, steps, reason, usage, approval and timeline."""
        events = events_of(workflow_id)
        runs_of = event_log.runs(workflow_id)
        record = event_log.run(runs_of[-1]) if runs_of else None
        mode = record.mode if record else session.options.mode
        result: WorkflowResult = saga.result(workflow_id, events, mode=mode)
        status = status_of(events[-1], session.workflow_app)
        start = events[0].time
        timeline = [
            TimelineEntry(
                id=e.id,
                type=e.type,
                depth=depth,
                at_ms=round((e.time - start).total_seconds() * 1000, 1),
                step=e.data.get("step"),
                reason=e.data.get("reason") or (e.data.get("failure") or {}).get("reason"),
                usage=Usage.model_validate(e.data["usage"]) if isinstance(e.data.get("usage"), dict) else None,
                by=e.data.get("by"),
            )
            for depth, e in canonical_order(events)
        ]
        total = Usage()
        for step in result.steps:
            total = total + step.usage
        return RunDetail(
            workflow_id=workflow_id,
            workflow=result.workflow,
            mode=mode,
            run=runs_of[-1] if runs_of else "?",
            status=status,
            reason=result.reason,
            steps=result.steps,
            usage=total + result.supervisor_usage,
            duration_ms=round((events[-1].time - start).total_seconds() * 1000, 1),
            approval=dict(events[-1].data) if status == WorkflowStatus.AWAITING_APPROVAL.value else None,
            timeline=timeline,
        )

    @app.get("/runs/{workflow_id}/events", response_model=list[dict[str, Any]], responses={404: {}})
    async def run_events(workflow_id: str, token: Annotated[Token, viewer]) -> list[dict[str, Any]]:
        """The run's events, in the CloudEvents JSON format, in append order."""
        return [json.loads(e.to_json()) for e in events_of(workflow_id)]

    @app.get("/runs/{workflow_id}/events/stream", responses={200: {"content": {"text/event-stream": {}}}})
    async def stream_events(workflow_id: str, request: Request, token: Annotated[Token, viewer]) -> Any:
        """The run's events as Server-Sent Events: those so far, then each new one,
        until the run ends or the client goes."""

        async def feed() -> AsyncIterator[str]:
            sent = 0
            while not await request.is_disconnected():
                events = event_log.events(workflow_id)
                for event in events[sent:]:
                    yield f"id: {event.id}\nevent: {event.type}\ndata: {event.to_json()}\n\n"
                sent = len(events)
                if events and saga.is_terminal(events[-1].type):
                    return
                await asyncio.sleep(0.5)  # the shared log is polled: other processes write it

        return StreamingResponse(feed(), media_type="text/event-stream")

    def decide(workflow_id: str, approved: bool, token: Token, note: str) -> Accepted:
        events = events_of(workflow_id)
        if status_of(events[-1], session.workflow_app) != WorkflowStatus.AWAITING_APPROVAL.value:
            raise HTTPException(409, f"{workflow_id} waits for no approval (its last event is {events[-1].type})")
        action = "approve" if approved else "reject"
        log.info("%s %ss run %s", token.name, action, workflow_id)
        act = coordinator.approve if approved else coordinator.reject
        carry(f"{action} {workflow_id}", act(workflow_id, by=token.name, note=note))
        return Accepted(workflow_id=workflow_id, action=action)

    @app.post("/runs/{workflow_id}/approve", response_model=Accepted, status_code=202, responses={404: {}, 409: {}})
    async def approve(workflow_id: str, decision: Decision, token: Annotated[Token, approver]) -> Accepted:
        """Approve the step the run waits on; the run carries on (the approver is the token's name)."""
        return decide(workflow_id, True, token, decision.note)

    @app.post("/runs/{workflow_id}/reject", response_model=Accepted, status_code=202, responses={404: {}, 409: {}})
    async def reject(workflow_id: str, decision: Decision, token: Annotated[Token, approver]) -> Accepted:
        """Reject the step the run waits on: it fails and the completed steps are undone."""
        return decide(workflow_id, False, token, decision.note)

    @app.post("/runs/{workflow_id}/retry", response_model=Accepted, status_code=202, responses={404: {}, 409: {}})
    async def retry(workflow_id: str, token: Annotated[Token, operator]) -> Accepted:
        """Carry on a run that stopped short (failed or in flight with nobody on it)."""
        events = events_of(workflow_id)
        status = status_of(events[-1], session.workflow_app)
        if status not in ("in flight", WorkflowStatus.FAILED.value, WorkflowStatus.NEEDS_ATTENTION.value):
            raise HTTPException(409, f"{workflow_id} is {status}: nothing to retry")
        log.info("%s retries run %s", token.name, workflow_id)
        carry(f"retry {workflow_id}", coordinator.resume(workflow_id))
        return Accepted(workflow_id=workflow_id, action="retry")

    def bus() -> Any:
        found = getattr(coordinator.engine, "bus", None)
        return found if found is not None else (session.run_queue.bus if session.run_queue else None)

    @app.get("/dead-letters", response_model=list[DeadLetterOut])
    async def dead_letters(token: Annotated[Token, viewer]) -> list[DeadLetterOut]:
        """What the bus gave up on (none without a bus)."""
        found = bus()
        if found is None:
            return []
        return [
            DeadLetterOut(
                group=d.group,
                error=d.error,
                deliveries=d.deliveries,
                malformed=d.malformed,
                event=d.event.model_dump(mode="json"),
            )
            for d in await found.dead_letters()
        ]

    @app.post("/dead-letters/replay", response_model=Replayed)
    async def replay(token: Annotated[Token, operator], group: str | None = None) -> Replayed:
        """Put the dead letters (of ``group``) back into their groups' queues."""
        found = bus()
        if found is None:
            return Replayed(replayed=0)
        log.info("%s replays dead letters (%s)", token.name, group or "all groups")
        return Replayed(replayed=await found.replay_dead_letters(group))

    metrics = RunMetrics(
        event_log,
        saga,
        status_of=lambda event: status_of(event, session.workflow_app),
        default_mode=session.options.mode,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(token: Annotated[Token, viewer]) -> Response:
        """Prometheus metrics of every run the state records (see shell/metrics.py)."""
        found = bus()
        metrics.dead_letters = len(await found.dead_letters()) if found is not None else None
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(CoordinatorError)
    async def coordinator_error(request: Request, exc: CoordinatorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    # page name -> (route, title); each page is the layout around its own part
    pages = {
        "runs": ("/", "Runs"),
        "run": ("/ui/runs/{workflow_id}", "Run"),
        "approvals": ("/ui/approvals", "Approvals"),
        "attention": ("/ui/attention", "Needs attention"),
        "dead-letters": ("/ui/dead-letters", "Dead letters"),
    }
    layout = string.Template((DASHBOARD / "layout.html").read_text(encoding="utf-8"))

    def page(name: str, title: str) -> Any:
        part = (DASHBOARD / f"{name}.part.html").read_text(encoding="utf-8").split("\n", 1)[1]  # after its comment
        html = layout.substitute(page=name, title=title, body="\n" + part.rstrip("\n"))

        async def serve() -> HTMLResponse:
            return HTMLResponse(html)

        return serve

    for name, (route, title) in pages.items():
        app.get(route, include_in_schema=False)(page(name, title))

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        allowed: Mapping[str, str] = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in allowed:
            raise HTTPException(404, "no such file")
        return FileResponse(DASHBOARD / name, media_type=allowed[name])

    return app


#: How long a server that is stopping waits for the runs it started.
DRAIN_S = 30.0


async def drain(app: FastAPI) -> None:
    """Wait (up to :data:`DRAIN_S`) for the runs and decisions ``app`` started in the
    background, before their session closes; what is still going then stops short
    and is carried on by the next ``resume`` (its record says where it was)."""
    pending: set[asyncio.Task[Any]] = set(app.state.background)
    if pending:
        _, still = await asyncio.wait(pending, timeout=DRAIN_S)
        for task in still:
            task.cancel()
        if still:
            log.warning("%d runs still going at shutdown were stopped; `coordinator resume` goes on", len(still))


def tokens_from_environment(environ: Mapping[str, str] | None = None) -> list[Token]:
    """The tokens ``$COORDINATOR_API_TOKENS`` holds (see :func:`parse_tokens`)."""
    return parse_tokens((environ if environ is not None else os.environ).get(TOKENS_ENV, ""))
