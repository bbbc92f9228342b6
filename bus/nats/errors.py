"""How the NATS JetStream bus turns nats-py and socket errors into
:class:`~agent_coordinator.core.errors.BusError`: naming the server (``host:port``,
never the credentials a URL may carry), what failed and what to check."""

from __future__ import annotations

from typing import Final

import nats.errors
import nats.js.errors

from agent_coordinator.bus.broker import redact
from agent_coordinator.core.errors import BusError

__all__ = ["NATS_FAILURES", "broker_error", "connect_error", "describe_failure"]

# Everything nats-py or the socket layer raise for a server problem.
NATS_FAILURES: Final = (nats.errors.Error, OSError, TimeoutError)


def describe_failure(exc: BaseException) -> str:
    """``"Type: message"`` (or the type alone when the message is empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def broker_error(
    action: str, exc: BaseException, *, where: str, password: str, stream: str, reconnecting: bool
) -> BusError:
    """The :class:`BusError` of ``action`` failing with ``exc`` on the server ``where``,
    with a hint by failure (``reconnecting``: the connection is being re-established);
    ``password`` is masked should the client's text quote it."""
    if reconnecting:
        hint = "the connection to the server is down and being re-established; retry shortly"
    elif isinstance(exc, nats.errors.ConnectionClosedError):
        hint = "the connection is closed; open a new bus"
    elif isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError):
        hint = "JetStream is not answering: is nats-server running with -js, and the stream's server up?"
    elif isinstance(exc, nats.js.errors.NoStreamResponseError):
        hint = f"no stream took the message: was stream {stream!r} deleted? reopen the bus to recreate it"
    elif isinstance(exc, TimeoutError):
        hint = "the server did not answer in time: check that it is up and not overloaded (nats-server logs)"
    elif isinstance(exc, nats.js.errors.APIError):
        hint = "the JetStream API refused the request; see its description"
    else:
        hint = "check that nats-server is reachable and healthy"
    return BusError(redact(f"NATS JetStream at {where}: {action} failed ({describe_failure(exc)}); {hint}", password))


def connect_error(where: str, cause: BaseException, *, password: str) -> BusError:
    """The :class:`BusError` of a first connect that failed with ``cause``."""
    return BusError(
        redact(
            f"cannot connect to the NATS server at {where} ({describe_failure(cause)}): check that"
            " nats-server is running there with JetStream enabled (nats-server -js) and that the URL's host,"
            " port and credentials are right",
            password,
        )
    )
