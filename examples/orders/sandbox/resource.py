"""The shape every sandbox service shares: one collection of records, created by an
idempotent ``POST``, listed by ``GET`` and undone once by ``POST /{id}/<undo>``.

A service subclasses :class:`ResourceService` with its record type, names its
collection, id prefix, undo verb and statuses, and implements only its domain rule
(:meth:`ResourceService._new_record`, plus :meth:`ResourceService._on_undo` where
undoing gives something back). Routes, for a service with ``noun = "charge"``:

* ``POST /charges`` -> 201 the new record (:meth:`Record.as_json`), or the refusal
  the domain rule raised;
* ``POST /charges/{charge_id}/<undo_verb>`` -> 200 ``{charge_id, status:
  <undone_status>}``; the first undo of an ``active_status`` record flips it and
  counts one effect, a later one is a no-op with the same answer; an unknown id ->
  404 naming the tool that returns ids (``create_tool``);
* ``GET /charges[?order_id=...]`` -> ``{"charges": [...]}``, each the full record
  (:meth:`Record.to_dict`: the answer's fields plus what the service keeps, such as
  the idempotency key), so another process can rebuild the records.

With a :class:`~agent_coordinator.examples.orders.sandbox.database.SandboxDatabase` every record is written when
created and when undone, inside the request's transaction (see
:mod:`agent_coordinator.examples.orders.sandbox.database`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_coordinator.examples.orders.sandbox.idempotency import (
    Answer,
    EffectRequest,
    IdempotencyStore,
    ServiceCounters,
    derive_id,
    invalid,
    ok,
    service_app,
)
from agent_coordinator.examples.orders.sandbox.scenario import Scenario

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from agent_coordinator.examples.orders.sandbox.database import SandboxDatabase

__all__ = ["Line", "Record", "ResourceService", "record_from_dict"]


class Line(BaseModel):
    """One line of a request body's ``items``: a SKU and a positive quantity."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1_000_000)


class Record(Protocol):
    """What :class:`ResourceService` needs of a record."""

    order_id: str
    # Each record narrows ``status`` to its own Literal pair; a settable protocol
    # member must match exactly, so the protocol leaves it open.
    status: Any

    def as_json(self) -> dict[str, Any]:
        """The record as the service answers it."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Every field of the record, JSON-ready (a superset of :meth:`as_json`); the
        record's ``from_dict`` rebuilds it."""
        ...


R = TypeVar("R", bound=Record)
D = TypeVar("D", bound="DataclassInstance")


def record_from_dict(cls: type[D], data: Mapping[str, Any], **converted: Any) -> D:
    """The dataclass record ``cls`` that its ``to_dict()`` gave ``data``: each field
    read by its name, except the ``converted`` ones (fields ``to_dict`` writes in
    another form, such as tuples of items written as lists of objects)."""
    return cls(**{f.name: converted[f.name] if f.name in converted else data[f.name] for f in fields(cls)})


class ResourceService(ABC, Generic[R]):
    """State and ASGI app of one sandbox service holding records of type ``R``.

    ``records`` maps record id to record. Effects and reads run under the store's
    lock (see :class:`~agent_coordinator.examples.orders.sandbox.idempotency.IdempotencyStore`), so every hook
    below must not await. With ``db`` the state is loaded from it now and every
    change is written to it (``db`` is ``None``: memory only).
    """

    #: Service name, for fault hashes and messages (``"payment"``).
    service: ClassVar[str]
    #: One record, in messages; the collection path is ``/<noun>s`` and the id field ``<noun>_id``.
    noun: ClassVar[str]
    #: Prefix of derived record ids (``"ch_"``).
    id_prefix: ClassVar[str]
    #: The tool whose answer carries the record id, named in the 404 for an unknown id.
    create_tool: ClassVar[str]
    #: Last segment of the undo route (``"refund"``).
    undo_verb: ClassVar[str]
    #: Status of a new record, and the status the undo moves it to, at most once.
    active_status: ClassVar[str]
    undone_status: ClassVar[str]

    def __init__(self, scenario: Scenario, *, db: SandboxDatabase | None = None) -> None:
        self.scenario = scenario
        self.records: dict[str, R] = {}
        # order id -> its record ids: a check of one order must not scan every record
        # (a batch's checks would cost the square of its size).
        self._by_order: dict[str, list[str]] = {}
        self.db = db
        self.store = IdempotencyStore(self.service, scenario, db, load_state=self._load_state)
        self.collection = f"{self.noun}s"
        self.id_field = f"{self.noun}_id"
        path = f"/{self.collection}"
        self.app = service_app(
            [
                Route(path, self._post_create, methods=["POST"]),
                Route(path, self._get_list, methods=["GET"]),
                Route(f"{path}/{{{self.id_field}}}/{self.undo_verb}", self._post_undo, methods=["POST"]),
                *self._extra_routes(),
            ]
        )
        self.store.load()

    @property
    def counters(self) -> ServiceCounters:
        """Requests served and effects applied by this service."""
        return self.store.counters

    def for_order(self, order_id: str) -> tuple[R, ...]:
        """The records made for ``order_id``, oldest first (the live records)."""
        return tuple(self.records[record_id] for record_id in self._by_order.get(order_id, ()))

    def _add(self, record_id: str, record: R) -> R:
        """Hold ``record`` (new to this process) under its id and its order's index."""
        self.records[record_id] = record
        self._by_order.setdefault(record.order_id, []).append(record_id)
        return record

    # -- what each service decides (under the store's lock; no awaits) --------------

    @abstractmethod
    def _new_record(self, req: EffectRequest, record_id: str) -> R:
        """The ``active_status`` record ``req`` creates under ``record_id``, with any
        effect on other state applied; raise :class:`~agent_coordinator.examples.orders.sandbox.idempotency.Refused`
        to answer otherwise (business refusal, injected fault), changing nothing."""

    def _on_undo(self, record: R) -> None:
        """What undoing ``record`` gives back besides its status; runs at most once per record."""

    def _undo_answer(self, record_id: str, record: R) -> dict[str, Any]:
        """The body of the undo's 200 answer."""
        return {self.id_field: record_id, "status": self.undone_status}

    def _extra_routes(self) -> Sequence[BaseRoute]:
        """Routes the service serves besides its collection."""
        return ()

    @abstractmethod
    def _record_from_dict(self, data: dict[str, Any]) -> R:
        """The record :meth:`Record.to_dict` gave ``data``."""

    # -- persistence (only with a db; under the lock, inside the request's transaction) --

    def _save(self, db: SandboxDatabase, record_id: str, record: R, *, new: bool) -> None:
        """Write ``record`` (created, or its status changed) and whatever else its
        effect changed."""
        if new:
            db.insert_record(self.service, record_id, record.status, record.to_dict())
        else:
            db.update_status(self.service, record_id, record.status)

    def _refresh(self, db: SandboxDatabase, record_id: str) -> None:
        """Take ``record_id``'s row from ``db`` (another connection may have made or
        undone it)."""
        row = db.load_record(self.service, record_id)
        if row is None:
            return
        record = self.records.get(record_id)
        if record is None:
            record = self._add(record_id, self._record_from_dict(row.data))
        record.status = row.status

    def _load_state(self) -> None:
        """Replace the records (and other state) with ``db``'s; called by the store."""
        if self.db is None:
            return
        self.records.clear()
        self._by_order.clear()
        for row in self.db.load_records(self.service):
            record = self._add(row.record_id, self._record_from_dict(row.data))
            record.status = row.status

    # -- effects ---------------------------------------------------------------------

    def _create(self, req: EffectRequest) -> Answer:
        record_id = derive_id(self.id_prefix, req.key)
        record = self._add(record_id, self._new_record(req, record_id))
        if self.db is not None:
            self._save(self.db, record_id, record, new=True)
        self.store.counters.effect(req.key)
        return ok(record.as_json(), status=201)

    def _undo(self, req: EffectRequest) -> Answer:
        record_id = str(req.path_params[self.id_field])
        if self.db is not None:
            self._refresh(self.db, record_id)
        record = self.records.get(record_id)
        if record is None:
            return invalid(
                f"no {self.noun} {record_id!r}; check the id returned by {self.create_tool}",
                status=404,
            )
        if record.status == self.active_status:
            self._on_undo(record)
            record.status = self.undone_status
            if self.db is not None:
                self._save(self.db, record_id, record, new=False)
            self.store.counters.effect(req.key)
        return ok(self._undo_answer(record_id, record))

    def _list(self, request: Request) -> Answer:
        order_ids = request.query_params.getlist("order_id")  # repeatable: several orders at once
        if not order_ids:
            return ok({self.collection: [r.to_dict() for r in self.records.values()]})
        return ok({self.collection: [r.to_dict() for order_id in order_ids for r in self.for_order(order_id)]})

    # -- routes ----------------------------------------------------------------------

    async def _post_create(self, request: Request) -> Response:
        return await self.store.effect(request, self._create)

    async def _post_undo(self, request: Request) -> Response:
        return await self.store.effect(request, self._undo)

    async def _get_list(self, request: Request) -> Response:
        return await self.store.read(request, self._list)
