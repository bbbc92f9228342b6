"""Every error agent-coordinator raises, in one place.

The hierarchy::

    CoordinatorError
    ├── WorkflowDefinitionError   a Workflow and its agents/tools don't fit together
    ├── InvalidInput              a workflow input failed validation (names the field)
    ├── MalformedEvent            an event is not a valid envelope, or lacks data its type requires
    │   └── UntrustedEvent        an event not signed by an emitter allowed to emit its type
    ├── StepError                 raised by tools; ``retryable`` says what the coordinator does
    │   ├── BusinessFailure       the world said no (declined, out of stock): compensate
    │   ├── TransientFailure      try again later (timeout, 5xx): retry with backoff
    │   └── InvalidArguments      the call itself was wrong: re-ask the model
    ├── ModelError                the chat model itself failed (provider down, bad config)
    │   └── ModelUnavailable      no answer after retries: unreachable, overloaded, refusing our key
    └── BusError                  an event bus failed (publish not confirmed, closed bus, ...)
        └── BusClosed             publish or subscribe on a bus that was closed

Backend exceptions (httpx, pydantic, a broker client) are translated into these at
the seam (``raise BusinessFailure(...) from exc``) so callers only ever catch ours.

A model that answers but keeps breaking the guard (unknown tool, invalid arguments,
wrong values) raises nothing: each refusal goes back to the model, and after its
re-asks the step fails like any refused step, the refusals listed in its
``StepOutcome.rejections`` (``agent_coordinator.core.runner``).
"""

from __future__ import annotations

__all__ = [
    "BusClosed",
    "BusError",
    "BusinessFailure",
    "CoordinatorError",
    "InvalidArguments",
    "InvalidInput",
    "MalformedEvent",
    "ModelError",
    "ModelUnavailable",
    "StepError",
    "TransientFailure",
    "UntrustedEvent",
    "WorkflowDefinitionError",
]


class CoordinatorError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class WorkflowDefinitionError(CoordinatorError):
    """A workflow definition is inconsistent with itself or with the agents given.

    Raised when a coordinator is built, never mid-run. The message names the step,
    agent or tool at fault and lists the valid choices.
    """


class InvalidInput(CoordinatorError):
    """A workflow input (an order, a booking request) failed validation.

    ``errors`` holds one ``(field_path, message)`` pair per problem, e.g.
    ``("items.0.quantity", "Input should be greater than 0")``.
    """

    def __init__(self, message: str, *, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[tuple[str, str]] = errors or []


class MalformedEvent(CoordinatorError):
    """Bytes or a mapping that should be an event are not one: not a valid envelope,
    or an envelope whose data lacks what its type requires (a step's trigger without
    the workflow input or the results it needs).

    Never retryable: the same event would fail the same way. A handler raises it to
    have the bus dead-letter the event at once, with the message as the reason.
    """


class UntrustedEvent(MalformedEvent):
    """An event a participant must not act on: it carries no signature, its signature
    does not verify against a known public key, or its signer may not emit its type
    (the workflow definition says who emits what). Dead-lettered at once, like any
    :class:`MalformedEvent`. Messages name the event, the key id and the emitter,
    never key material.
    """


class StepError(CoordinatorError):
    """An error a tool raises to tell the coordinator how its call went wrong.

    ``retryable`` is the one bit the coordinator acts on: a retryable error is
    retried with backoff (bounded); a non-retryable one fails the step at once.
    """

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BusinessFailure(StepError):
    """The service refused on business grounds: card declined, SKU out of stock.

    Never retried; the step fails and the completed steps are compensated.
    """

    retryable = False


class TransientFailure(StepError):
    """A failure that may pass: a timeout, an HTTP 5xx, a connection reset.

    Retried with exponential backoff and jitter; when retries are exhausted the
    step fails like a business failure.
    """

    retryable = True


class InvalidArguments(StepError):
    """The tool was called with arguments its schema or the service rejects.

    When the arguments came from a model, the model is told what was wrong and
    re-asked; otherwise the step fails.
    """

    retryable = False


class ModelError(CoordinatorError):
    """The chat model could not be called (provider unreachable, misconfigured)."""


class ModelUnavailable(ModelError):
    """A step's chat model gave no answer at all: unreachable (connection refused,
    DNS, timeouts), overloaded (5xx) or rate-limited (429) after the step runner's
    retries, or refusing the deployment's credentials (401, 403) or model (404).

    An operational failure, not the business's answer: what a step does about it is
    ``RunSettings.on_model_unavailable`` (stop the run, resumable, or compensate it
    and end ``needs_attention``). ``reason`` names the agent and the last error,
    with secrets redacted.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BusError(CoordinatorError):
    """An event bus operation failed; the message says which and what to check."""


class BusClosed(BusError):
    """The bus was closed; publish and subscribe are no longer accepted."""
