"""The event envelope both coordination modes emit, and how events are minted.

An :class:`Event` is a CloudEvents 1.0 event, and :meth:`Event.to_json` is its
structured-mode JSON form (``application/cloudevents+json``): the byte form the event
log, the outbox and every bus carry. Attributes: ``specversion``, ``id``, ``source``,
``type``, ``subject`` (always the workflow id), ``time``, ``datacontenttype``
(``application/json``) and ``data``, plus two extension attributes -- ``causationid``
(the id of the event that caused this one; absent on a workflow's start event) and
``traceparent`` (the W3C trace context, as CloudEvents' distributed-tracing
extension names it). In Python the cause is ``event.causation_id``; only the
serialised name is ``causationid``, since CloudEvents allows extension names of
lowercase letters and digits only. :func:`parse_event` also reads the
``causation_id`` name of bodies written before (old event-log rows, checkpoints).

A signed event carries two more extension attributes: ``signingkey`` (the id of the
emitter's key) and ``signature`` (the emitter's signature over the rest of the
event). An :class:`EventFactory` given a ``signer`` signs each event it mints as the
emitter its caller names; :mod:`agent_coordinator.core.signing` says how, and how signatures are
checked. An unsigned event has neither attribute, so it serialises as before.

Determinism: an event's ``id`` is derived from (seed, subject, type, causation id),
so the same run emits the same ids, and a redelivered or re-run handler emits an
event with the *same* id -- which is what lets logs, inboxes and projections
deduplicate. ``time`` comes from a :class:`Clock`: :class:`SystemClock` in
production, :class:`LogicalClock` (cause time + 1 ms) where a byte-for-byte
reproducible log is wanted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from agent_coordinator.core.errors import MalformedEvent
from agent_coordinator.core.telemetry import current_traceparent

__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "Clock",
    "Event",
    "EventFactory",
    "EventSigner",
    "LogicalClock",
    "SystemClock",
    "parse_event",
]

CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json"
"""The media type of :meth:`Event.to_json` (CloudEvents JSON event format, structured
mode); brokers label messages with it so receivers know the body is a whole event."""

_NAMESPACE = uuid.UUID("6f1c1d3e-6a52-4d3c-9a53-6d2f1b0c7e10")


class Event(BaseModel):
    """One domain event: immutable, a valid CloudEvents 1.0 event.

    Serialised (``model_dump``, :meth:`to_json`) with CloudEvents attribute names:
    the cause as ``causationid``, left out when there is none (CloudEvents has no
    null attributes). Validated from either ``causationid`` or the older
    ``causation_id``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1, description="who emitted it, e.g. 'agent/payment'")
    type: str = Field(min_length=1, description="the domain event name, e.g. 'PaymentProcessed'")
    subject: str = Field(min_length=1, description="the workflow id")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)
    causation_id: str | None = Field(default=None, alias="causationid", description="the id of the cause")
    traceparent: str = Field(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
    signingkey: str | None = Field(default=None, min_length=1, description="the id of the key that signed it")
    signature: str | None = Field(default=None, min_length=1, description="the emitter's signature (base64)")

    @model_serializer(mode="wrap")
    def _cloudevents_attributes(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # One name whatever by_alias says (pydantic < 2.11 cannot default it), and an
        # absent cause is an absent attribute: CloudEvents' formats have no null value.
        attributes: dict[str, Any] = handler(self)
        cause = attributes.pop("causation_id", None)
        cause = attributes.pop("causationid", cause)
        if cause is not None:
            attributes["causationid"] = cause
        for name in ("signingkey", "signature"):  # unsigned: absent, as before signing existed
            if attributes.get(name, "") is None:
                del attributes[name]
        return attributes

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the CloudEvents structured-mode
        body (:data:`CLOUDEVENTS_CONTENT_TYPE`) that logs, the outbox and buses carry."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def parse_event(raw: str | bytes | dict[str, Any]) -> Event:
    """Parse an envelope from JSON text/bytes or a mapping: a CloudEvents structured-mode
    body as :meth:`Event.to_json` writes it, or one written before with ``causation_id``.

    Raises :class:`MalformedEvent` naming the fields that are missing or wrong.
    """
    try:
        if isinstance(raw, (str, bytes)):
            return Event.model_validate_json(raw)
        return Event.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise MalformedEvent(f"not a valid event envelope: {problems}") from exc


class Clock(Protocol):
    """Where event times come from."""

    def event_time(self, cause: Event | None) -> datetime:
        """The time to stamp on an event caused by ``cause`` (None: a workflow start)."""
        ...


class SystemClock:
    """Wall-clock UTC time."""

    def event_time(self, cause: Event | None) -> datetime:
        return datetime.now(UTC)


class LogicalClock:
    """Reproducible time: a start event gets ``epoch``; every other event its cause's
    time plus one millisecond. Two runs of the same input give identical times."""

    def __init__(self, epoch: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.epoch = epoch

    def event_time(self, cause: Event | None) -> datetime:
        if cause is None:
            return self.epoch
        return cause.time + timedelta(milliseconds=1)


class EventSigner(Protocol):
    """Signs events as a named emitter (:class:`agent_coordinator.core.signing.Keyring` is one)."""

    def sign(self, event: Event, *, as_: str) -> Event:
        """``event`` with ``signingkey`` and ``signature`` set by emitter ``as_``'s key.

        Deterministic: the same event and key give the same signature. Raises
        :class:`~agent_coordinator.core.errors.CoordinatorError` when this signer holds no
        private key of ``as_``.
        """
        ...


class EventFactory:
    """Mints events with deterministic ids and trace context.

    ``seed`` separates runs that should not share ids (two runs of one order with
    different seeds); the same seed reproduces the same ids. Only a start event's id
    depends on the seed directly: the others derive from their cause's id, so a run
    carried on by a process with another seed continues with the same ids. With a ``signer`` every
    event minted with ``signed_by`` is signed as that emitter (deterministically, so
    the same run still gives the same bytes); without one, events are unsigned.
    """

    def __init__(self, *, seed: int = 0, clock: Clock | None = None, signer: EventSigner | None = None) -> None:
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.signer = signer

    def event(
        self,
        type: str,
        *,
        subject: str,
        source: str,
        data: dict[str, Any] | None = None,
        cause: Event | None = None,
        signed_by: str | None = None,
    ) -> Event:
        """A new event of ``type`` about workflow ``subject``, caused by ``cause``,
        signed as emitter ``signed_by`` when this factory has a signer."""
        # A start event's id comes from the seed; every other event's from its cause's
        # id, which carries the seed on. So whoever carries a run on -- a resume, a
        # worker, with whatever seed of its own -- mints the very ids the run would
        # have had: a repeated emission is a duplicate, never a fork.
        if cause is None:
            event_id = str(uuid.uuid5(_NAMESPACE, f"{self.seed}|{subject}|{type}|"))
        else:
            event_id = str(uuid.uuid5(_NAMESPACE, f"{subject}|{type}|{cause.id}"))
        if cause is not None:
            # One trace per run, whichever process emits: the cause's trace goes on.
            trace_id = cause.traceparent.split("-")[1]
        else:
            trace_id = hashlib.sha256(f"{self.seed}|{subject}".encode()).hexdigest()[:32]
        span_id = event_id.replace("-", "")[:16]
        traceparent = f"00-{trace_id}-{span_id}-01"
        if not isinstance(self.clock, LogicalClock):
            # Minted inside a recording span: the event carries that span, so whoever
            # acts on it continues the very trace (core/telemetry.py). A logical clock
            # keeps the derived ids: the same inputs give the same bytes.
            traceparent = current_traceparent() or traceparent
        event = Event(
            id=event_id,
            source=source,
            type=type,
            subject=subject,
            time=self.clock.event_time(cause),
            data=data or {},
            causation_id=cause.id if cause is not None else None,
            traceparent=traceparent,
        )
        if self.signer is not None and signed_by is not None:
            return self.signer.sign(event, as_=signed_by)
        return event
