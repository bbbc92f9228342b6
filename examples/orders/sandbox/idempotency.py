"""The HTTP plumbing every sandbox service shares: idempotency, fault injection,
the JSON wire format of answers and errors.

Wire convention (what :func:`agent_coordinator.tools.http.call_service` translates):

* ``2xx`` -- success, the body is the resource;
* ``409 {"error": "business", "reason": ...}`` -- a business refusal (card declined,
  out of stock, cannot ship there);
* ``400 / 404 / 422 {"error": "invalid", "reason": ...}`` -- the request itself was
  wrong (bad body, unknown id, an idempotency key reused for a different request);
* ``503 {"error": "transient", "reason": ...}`` -- an injected fault; try again.

Idempotency: an effectful ``POST`` must carry an ``Idempotency-Key`` header. The
first answer to a key that *started executing* -- a success or a business refusal --
is stored and replayed for every later request with that key, so a retried,
resumed or redelivered call never repeats its effect. Answers that did not execute
are not stored: a 503 (the effect did not happen, so a retry must be able to do it)
and a 400/404 (the request was wrong; the caller may correct it and retry under the
same key, which is exactly what happens when a model is re-asked). Injected faults
(``Scenario.transient_rate``) hit any attempt, replays included, like a real outage.

Consistency under concurrency: all of one service's state is read and written only
inside ``with self._lock:`` blocks that contain no ``await``, so on one event loop
each request's check-then-act is atomic; the (uncontended, cheap) lock additionally
keeps it correct if the app is ever served from several threads. With a store
(``Sandbox(store=...)``) the same block also runs one SQLite transaction that
re-reads and writes the rows involved, so the state outlives the process and may be
shared by several (:mod:`agent_coordinator.examples.orders.sandbox.database`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from agent_coordinator.examples.orders.sandbox.scenario import Scenario
from agent_coordinator.tools.http import IDEMPOTENCY_HEADER

if TYPE_CHECKING:
    from agent_coordinator.examples.orders.sandbox.database import SandboxDatabase

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Answer",
    "EffectRequest",
    "IdempotencyStore",
    "Refused",
    "ServiceCounters",
    "business",
    "derive_id",
    "invalid",
    "json_http_error",
    "ok",
    "parse_body",
    "service_app",
    "transient",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Answer:
    """A service's answer before it becomes an HTTP response: status and JSON body."""

    status: int
    body: dict[str, Any]

    @property
    def stored(self) -> bool:
        """Whether the answer is kept for replay: it executed (success or business
        refusal). Faults and invalid requests did nothing, so they are not kept."""
        return self.status < 400 or self.status == 409

    def response(self, *, replayed: bool = False) -> Response:
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return JSONResponse(self.body, status_code=self.status, headers=headers)


def ok(body: dict[str, Any], status: int = 200) -> Answer:
    """A success answer."""
    return Answer(status, body)


def business(reason: str) -> Answer:
    """A business refusal: HTTP 409 ``{"error": "business", "reason": reason}``."""
    return Answer(409, {"error": "business", "reason": reason})


def invalid(reason: str, status: int = 400) -> Answer:
    """The request was wrong: ``{"error": "invalid", "reason": reason}`` (400 by default)."""
    return Answer(status, {"error": "invalid", "reason": reason})


def transient(reason: str) -> Answer:
    """An injected fault: HTTP 503 ``{"error": "transient", "reason": reason}``."""
    return Answer(503, {"error": "transient", "reason": reason})


class Refused(Exception):  # control flow inside a service; never escapes it
    """Raised inside an effect to answer at once (e.g. a body that failed validation)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.get("reason", ""))
        self.answer = answer


def parse_body(model: type[M], body: Any) -> M:
    """Validate a parsed JSON body against ``model``; raises :class:`Refused` with a 400
    naming every offending field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in exc.errors())
        raise Refused(invalid(f"invalid request body: {detail}")) from exc


def derive_id(prefix: str, key: str) -> str:
    """A resource id derived from the idempotency key that created it, so the same
    run always yields the same ids (e.g. ``res_1a2b3c4d5e6f``)."""
    return prefix + hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


@dataclass(slots=True)
class ServiceCounters:
    """What one service has done, for tests and benchmarks ("no effect twice").

    * ``requests`` -- HTTP requests answered by a route (reads included);
    * ``attempts`` -- requests carrying an idempotency key (effectful POSTs);
    * ``replays`` -- attempts answered from the idempotency store;
    * ``faults`` -- 503s injected (``transient_rate`` or a flaky card);
    * ``refusals`` -- business refusals decided (not counting replays);
    * ``effects`` -- state changes applied; ``effects_by_key`` per idempotency key,
      which is never more than 1 when idempotency holds.
    """

    requests: int = 0
    attempts: int = 0
    replays: int = 0
    faults: int = 0
    refusals: int = 0
    effects: int = 0
    effects_by_key: dict[str, int] = field(default_factory=dict)

    def effect(self, key: str) -> None:
        """Record one state change made under ``key``."""
        self.effects += 1
        self.effects_by_key[key] = self.effects_by_key.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class EffectRequest:
    """What an effect function sees of a request: key, attempt number (1-based,
    counting every request with that key), parsed JSON body, path parameters."""

    key: str
    attempt: int
    body: Any
    path_params: Mapping[str, Any]


#: An effect: runs under the service lock (so it must not await) and decides the answer.
Effect = Callable[[EffectRequest], Answer]


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: tuple[str, str, Any]
    answer: Answer

    def to_json(self) -> str:
        method, path, body = self.fingerprint
        return json.dumps(
            {"fingerprint": [method, path, body], "status": self.answer.status, "body": self.answer.body},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> _Stored:
        data = json.loads(text)
        method, path, body = data["fingerprint"]
        return cls((method, path, body), Answer(data["status"], data["body"]))


class IdempotencyStore:
    """Idempotency, fault injection and request accounting for one service.

    ``service`` names the service in fault hashes and messages. All of the service's
    state must be touched only inside :meth:`effect` / :meth:`read` callbacks (or
    ``with store.lock:``) so requests stay consistent.

    With ``db`` (a :class:`~agent_coordinator.examples.orders.sandbox.database.SandboxDatabase`) every effectful
    request runs in one database transaction that re-reads the key's row first and
    writes it (attempts, effects, stored answer) before the answer is sent; the effect
    callback persists its own rows in the same transaction. ``load_state`` reloads the
    service's own state (records, stock) from ``db``; it runs, under the lock, from
    :meth:`load` and after a failed transaction.
    """

    def __init__(
        self,
        service: str,
        scenario: Scenario,
        db: SandboxDatabase | None = None,
        *,
        load_state: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.scenario = scenario
        self.counters = ServiceCounters()
        self.lock = threading.Lock()
        self.db = db
        self._load_state = load_state
        self._attempts: dict[str, int] = {}
        self._answers: dict[str, _Stored] = {}
        self._latency_s = scenario.latency_ms / 1000.0

    def attempts(self, key: str) -> int:
        """How many requests carried ``key`` so far."""
        with self.lock:
            return self._attempts.get(key, 0)

    async def effect(self, request: Request, effect: Effect) -> Response:
        """Answer an effectful request: check the key, inject faults, replay or run
        ``effect`` and store its answer when it executed."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        raw = await request.body()
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        with self.lock:
            self.counters.requests += 1
            if not key:
                return invalid(
                    f"missing {IDEMPOTENCY_HEADER} header: every {request.method} {request.url.path} must carry "
                    "a key that identifies the effect, so a retry cannot repeat it"
                ).response()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return invalid("request body is not valid JSON; send a JSON object").response()
            if self.db is None:
                return self._attempt(request, key, body, effect)
            return self._attempt_durably(self.db, request, key, body, effect)

    def _attempt(self, request: Request, key: str, body: Any, effect: Effect) -> Response:
        """One attempt of ``key`` (under the lock): count it, inject a fault, replay the
        stored answer, or run ``effect`` and store its answer."""
        self.counters.attempts += 1
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        if self.scenario.transient_fault(self.service, key, attempt):
            self.counters.faults += 1
            return transient(
                f"{self.service} service temporarily unavailable (injected fault, attempt {attempt}); retry"
            ).response()
        fingerprint = (request.method, str(request.scope["path"]), body)
        stored = self._answers.get(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return invalid(
                    f"{IDEMPOTENCY_HEADER} {key!r} reused with a different request; use a new key for a new request",
                    status=422,
                ).response()
            self.counters.replays += 1
            return stored.answer.response(replayed=True)
        try:
            answer = effect(EffectRequest(key, attempt, body, request.path_params))
        except Refused as refused:
            answer = refused.answer
        if answer.status == 503:
            self.counters.faults += 1
        elif answer.status == 409:
            self.counters.refusals += 1
        if answer.stored:
            self._answers[key] = _Stored(fingerprint, answer)
        return answer.response()

    def _attempt_durably(self, db: SandboxDatabase, request: Request, key: str, body: Any, effect: Effect) -> Response:
        """:meth:`_attempt` inside one transaction: re-read ``key``'s row, attempt, write
        the row (``effect`` writes its own rows); on any failure reload from ``db``."""
        counters = self.counters
        try:
            with db.transaction():
                self._refresh_key(db, key)
                replays, faults, refusals = counters.replays, counters.faults, counters.refusals
                had_answer = key in self._answers
                response = self._attempt(request, key, body, effect)
                new_answer = self._answers.get(key) if not had_answer else None
                db.save_key(
                    self.service,
                    key,
                    attempts=self._attempts[key],
                    effects=counters.effects_by_key.get(key, 0),
                    replays=counters.replays - replays,
                    faults=counters.faults - faults,
                    refusals=counters.refusals - refusals,
                    answer=new_answer.to_json() if new_answer is not None else None,
                )
        except BaseException:
            self._load(db)  # memory may hold changes the file does not: take the file's
            raise
        return response

    def _refresh_key(self, db: SandboxDatabase, key: str) -> None:
        # Another connection may have attempted this key: take its attempt count, effect
        # count and stored answer, adjusting the totals by the difference.
        row = db.load_key(self.service, key)
        if row is None:
            return
        counters = self.counters
        known = self._attempts.get(key, 0)
        if row.attempts != known:
            counters.attempts += row.attempts - known
            counters.requests += row.attempts - known
            self._attempts[key] = row.attempts
        known = counters.effects_by_key.get(key, 0)
        if row.effects != known:
            counters.effects += row.effects - known
            counters.effects_by_key[key] = row.effects
        if row.answer is not None and key not in self._answers:
            self._answers[key] = _Stored.from_json(row.answer)

    def load(self) -> None:
        """Replace this service's state with what ``db`` holds (no-op without ``db``).

        Durable counters (attempts, replays, faults, refusals, effects and
        ``effects_by_key``) become the file's totals over every process; ``requests``
        keeps this object's reads and keyless requests, which are not stored.
        """
        if self.db is not None:
            with self.lock:
                self._load(self.db)

    def _load(self, db: SandboxDatabase) -> None:
        with db.snapshot():
            rows = db.load_keys(self.service)
            if self._load_state is not None:
                self._load_state()
        counters = self.counters
        unstored = counters.requests - counters.attempts
        self._attempts = {row.key: row.attempts for row in rows}
        self._answers = {row.key: _Stored.from_json(row.answer) for row in rows if row.answer is not None}
        counters.attempts = sum(row.attempts for row in rows)
        counters.requests = unstored + counters.attempts
        counters.replays = sum(row.replays for row in rows)
        counters.faults = sum(row.faults for row in rows)
        counters.refusals = sum(row.refusals for row in rows)
        counters.effects_by_key.clear()
        counters.effects_by_key.update((row.key, row.effects) for row in rows if row.effects)
        counters.effects = sum(counters.effects_by_key.values())

    async def read(self, request: Request, reader: Callable[[Request], Answer]) -> Response:
        """Answer a read-only request with ``reader`` (run under the lock; no faults)."""
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        with self.lock:
            self.counters.requests += 1
            try:
                answer = reader(request)
            except Refused as refused:
                answer = refused.answer
            return answer.response()


async def json_http_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler answering routing errors (unknown route 404, wrong
    method 405) in the sandbox's JSON error format, so clients parse one format."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    body = invalid(f"{request.method} {request.url.path}: {exc.detail}", status=exc.status_code).body
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def service_app(routes: Sequence[BaseRoute]) -> Starlette:
    """A Starlette app for ``routes`` whose routing errors (404, 405) answer in the
    sandbox's JSON error format."""
    return Starlette(routes=routes, exception_handlers={HTTPException: json_http_error})
