"""Calling an HTTP service from a tool: the one place HTTP outcomes become StepErrors.

:func:`call_service` sends the call's idempotency key and translates the answer, so
a tool body is one line and the coordinator only ever sees our errors:

==============================================  ==========================================
answer                                          raised
==============================================  ==========================================
2xx with a JSON object body (or no body)        -- (the object, or ``{}``, is returned)
402, 409, or 422 with ``"error": "business"``   :class:`~agent_coordinator.core.errors.BusinessFailure`
400, 404, 422, any other 4xx                    :class:`~agent_coordinator.core.errors.InvalidArguments`
408, 429, 5xx, timeout, connection failure      :class:`~agent_coordinator.core.errors.TransientFailure`
==============================================  ==========================================

Business refusal convention: a service refuses on business grounds with **HTTP 409**
(or 402 for payments) and a JSON body ``{"error": "business", "reason": "..."}``; a 422
counts as a business refusal only when its body says ``"error": "business"`` (422 is
otherwise a validation error). The ``reason`` becomes the exception's message.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent_coordinator.core.context import ToolCallContext
from agent_coordinator.core.errors import BusinessFailure, InvalidArguments, TransientFailure

__all__ = ["IDEMPOTENCY_HEADER", "call_service"]

IDEMPOTENCY_HEADER = "Idempotency-Key"

#: Statuses that may pass if the call is repeated (besides every 5xx).
_TRANSIENT_4XX = frozenset({408, 425, 429})
_BUSINESS_STATUSES = frozenset({402, 409})
_MAX_TEXT = 300


async def call_service(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json: dict[str, Any] | None = None,
    context: ToolCallContext,
    timeout: float | None = None,  # noqa: ASYNC109 -- httpx's per-request timeout, not a deadline
) -> dict[str, Any]:
    """Call ``method url`` with ``json`` as the body and return the JSON object answered.

    The request carries ``Idempotency-Key: context.idempotency_key`` so a repeated
    call (retry, resume, redelivery) does not repeat the effect. ``timeout`` (seconds)
    overrides the client's timeout for this call; ``None`` keeps the client's.

    Raises (always ``from`` the underlying cause; httpx errors never escape):

    * :class:`BusinessFailure` -- 402, 409, or 422 whose body has ``"error": "business"``;
      the message is the service's ``reason``;
    * :class:`InvalidArguments` -- any other 4xx (400, 404, 422, ...) or an invalid URL;
      the message is the service's ``reason``;
    * :class:`TransientFailure` -- 408/425/429, 5xx, a timeout, a transport error, or a
      2xx whose non-empty body is not a JSON object; the message names the call and
      status.
    """
    headers = {IDEMPOTENCY_HEADER: context.idempotency_key}
    request_timeout = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
    try:
        request = client.build_request(method, url, json=json, headers=headers, timeout=request_timeout)
    except httpx.InvalidURL as exc:
        raise InvalidArguments(f"{method.upper()} {url}: invalid URL ({exc}); check the service URL and ids") from exc
    # Messages name the absolute URL (base_url joined) so the failing service is obvious.
    call = f"{request.method} {request.url}"
    try:
        response = await client.send(request)
    except httpx.TimeoutException as exc:
        raise TransientFailure(f"{call} timed out ({type(exc).__name__}); retry later") from exc
    except httpx.TransportError as exc:
        raise TransientFailure(f"{call} failed in transport ({type(exc).__name__}: {exc}); retry later") from exc
    except httpx.HTTPError as exc:
        raise TransientFailure(f"{call} failed ({type(exc).__name__}: {exc}); retry later") from exc
    return _translate(call, response)


def _translate(call: str, response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    body = _json_or_none(response)
    if 200 <= status < 300:
        if isinstance(body, dict):
            return body
        if not response.content:  # e.g. 204 No Content: success with nothing to report
            return {}
        raise TransientFailure(f"{call} answered {status} without a JSON object body: {_snippet(response)}")
    reason = _reason(body) or f"{call} answered {status}: {_snippet(response) or response.reason_phrase}"
    # The HTTPStatusError is the cause: it carries the request and response for debugging.
    cause = httpx.HTTPStatusError(f"{call} answered {status}", request=response.request, response=response)
    if status >= 500 or status in _TRANSIENT_4XX:
        raise TransientFailure(f"{call} answered {status}: {reason}") from cause
    if status in _BUSINESS_STATUSES or (status == 422 and isinstance(body, dict) and body.get("error") == "business"):
        raise BusinessFailure(reason) from cause
    # Everything else -- 400, 404, 422, other 4xx, and stray 1xx/3xx -- says the call was wrong.
    raise InvalidArguments(reason) from cause


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:  # not JSON (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        return None


def _reason(body: Any) -> str | None:
    if isinstance(body, dict):
        for field in ("reason", "detail", "message", "error"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
    return None


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip()
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
