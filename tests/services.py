"""Reaching the machine's real services from tests.

Tests that need PostgreSQL, RabbitMQ or NATS call :func:`require_service` first: it
skips the test with a clear reason when the service is unreachable, except when
``REQUIRE_SERVICES=1`` (set by ``.ci/run``), where it fails the test instead -- CI
must never skip them silently.
"""

from __future__ import annotations

import os
import socket

import pytest

__all__ = ["NATS_URL", "POSTGRES_URL", "RABBITMQ_URL", "require_service", "services_required"]

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_PORTS = {"rabbitmq": ("127.0.0.1", 5672), "nats": ("127.0.0.1", 4222), "postgresql": ("127.0.0.1", 5432)}


def services_required() -> bool:
    """True when a missing service must fail tests instead of skipping them."""
    return os.environ.get("REQUIRE_SERVICES", "") == "1"


def require_service(name: str) -> None:
    """Skip (or, under REQUIRE_SERVICES=1, fail) unless service ``name`` accepts connections."""
    host, port = _PORTS[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc}); start it (see the env skill's machine page)"
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
