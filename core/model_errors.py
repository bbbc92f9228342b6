"""How the step runner reads a chat model's failures: whether a retry may help, and how
to say what went wrong without repeating a secret.

Here, in the kernel, because the runner (which retries model calls and turns
provider errors into a step's reason) must not depend on the layer that resolves
models by spec (:mod:`agent_coordinator.agents.models`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from agent_coordinator.core.errors import CoordinatorError, ModelError

__all__ = ["is_transient_model_error", "redact_secrets"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_MIN_SECRET_LENGTH: Final = 6

_TRANSIENT_STATUSES: Final = frozenset({408, 409, 425, 429})


def is_transient_model_error(exc: BaseException) -> bool:
    """Whether a failed model call may succeed if retried.

    Not transient: our own non-retryable errors (a :class:`ModelError` such as a
    cassette replay miss) and HTTP 4xx answers other than 408, 409, 425 and 429
    (a bad key, an unknown model, a request the provider rejects: retrying repeats
    the same refusal). Transient: 429 (rate limited), 408/409/425, 5xx, timeouts,
    connection errors, and anything unrecognised (the conservative choice: a
    bounded retry costs little). The status is read from the ``status_code``
    attribute the OpenAI and Anthropic SDKs set, or from an httpx ``response``.
    """
    if isinstance(exc, ModelError):
        return False
    if isinstance(exc, CoordinatorError):
        return bool(getattr(exc, "retryable", False))
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status in _TRANSIENT_STATUSES
    return True


def redact_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ``***``.

    A variable is secret-looking when its name ends in KEY, TOKEN, SECRET or
    PASSWORD and its value is at least 6 characters long. Use it on provider
    exception messages before they are logged or become a step's reason (which is
    written to the event log).
    """
    env = os.environ if environ is None else environ
    secrets = sorted(
        (value for name, value in env.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH),
        key=len,
        reverse=True,
    )
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
