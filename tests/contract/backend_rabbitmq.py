"""The rabbitmq backend's entry in the bus contract suite (see conftest.BackendConfig)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.contract.conftest import BackendConfig

RABBITMQ_BACKENDS: tuple[BackendConfig, ...] = ()
