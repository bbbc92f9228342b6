"""OpenTelemetry spans, through ``opentelemetry-api`` only.

Spans: a run (orchestration), each step, each model call (GenAI semantic
conventions: ``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.usage.*``), each tool call and compensation, each event a choreography
participant processes and each event published (messaging conventions). Without an
SDK they cost a no-op call each. With one -- ``pip install
'agent-coordinator[otel]'`` and the standard ``OTEL_*`` variables, which
:func:`configure_from_environment` reads for the CLI -- they are exported.

One order is one trace, whichever processes carry it: every event carries a W3C
``traceparent``; a process that acts on an event starts its span as a child of it,
and an event minted inside a recording span carries *that* span's context
(:func:`current_traceparent`). So the trace joins the caller's (an API request, a
test) and follows the order across brokers in the event itself. Without a recording
span -- no SDK, or a logical clock, which keeps the deterministic ids -- the
traceparent stays the one derived from the seed and the workflow id.

Tests use :func:`use_provider`, which routes this module's spans to a provider of
their own without touching OpenTelemetry's global one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from agent_coordinator.core.events import Event

__all__ = [
    "SpanKind",
    "configure_from_environment",
    "current_traceparent",
    "failed",
    "span",
    "use_provider",
]

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
# One tracer for the process, asked for once: a proxy that follows the global provider
# when an SDK installs one later. use_provider swaps in a test's own.
_GLOBAL_TRACER = trace.get_tracer("agent_coordinator")
_tracer_override: trace.Tracer | None = None


def _tracer() -> trace.Tracer:
    return _tracer_override if _tracer_override is not None else _GLOBAL_TRACER


@contextlib.contextmanager
def use_provider(provider: trace.TracerProvider) -> Iterator[None]:
    """Send this module's spans to ``provider`` inside the block (tests)."""
    global _tracer_override
    previous, _tracer_override = _tracer_override, provider.get_tracer("agent_coordinator")
    try:
        yield
    finally:
        _tracer_override = previous


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Event | None = None,
) -> Iterator[Span]:
    """A span named ``name``, current inside the block: a child of ``parent``'s
    traceparent when given (an event this process acts on), else of the current
    span. An exception leaving the block marks it failed."""
    context = _PROPAGATOR.extract({"traceparent": parent.traceparent}) if parent is not None else None
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _tracer().start_as_current_span(name, context=context, kind=kind, attributes=attrs) as current:
        yield current


def failed(current: Span, reason: str) -> None:
    """Mark ``current`` as failed with ``reason`` (a step or call that did not succeed)."""
    current.set_status(Status(StatusCode.ERROR, reason))


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span if it is recording, else None."""
    current = trace.get_current_span()
    context = current.get_span_context()
    if not current.is_recording() or not context.is_valid:
        return None
    # Only the sampled bit: W3C level 2's "random trace id" flag (0x02) is not one
    # every consumer of a CloudEvents traceparent accepts.
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags & 0x01:02x}"


def configure_from_environment(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider exporting by OTLP when ``OTEL_*`` asks for it
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set,
    ``OTEL_TRACES_EXPORTER`` not ``none``); ``service`` names the process unless
    ``OTEL_SERVICE_NAME`` does. Returns whether it did; a missing SDK is a warning,
    not an error (the spans stay no-ops)."""
    env = environ if environ is not None else os.environ
    wanted = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not wanted or env.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the SDK is not: pip install 'agent-coordinator[otel]'")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # the SDK flushes it at exit (its own atexit hook)
    return True
