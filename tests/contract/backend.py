"""What a backend of the bus contract suite is: :class:`BackendConfig` (see test_bus_contract.py).

A module of its own, so that the backend modules (``backend_<name>.py``), which
test_bus_contract.py imports, can import it at their top without an import cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from agent_coordinator.bus import EventBus
from agent_coordinator.testing.bus_contract import BusFactory

__all__ = ["BackendConfig", "BusFactory"]


@dataclass(frozen=True)
class BackendConfig:
    """One backend under test: how to open it, how to wait for it, what it can do.

    * ``settle`` -- waits until the bus has nothing queued, in flight or awaiting
      redelivery; used to assert that nothing *more* arrives (no extra deliveries).
    * ``supports_dead_letters`` -- ``dead_letters()``/``replay_dead_letters()`` work.
    * ``supports_duplicate_delivery_switch`` -- ``duplicate_delivery=True`` is honoured.
    * ``fifo_per_group`` -- one member with concurrency 1 sees publish order.
    * ``drains_on_close`` -- ``close()`` handles everything queued before returning
      (a broker backend may instead leave it in the broker).
    """

    name: str
    open: BusFactory
    settle: Callable[[EventBus], Awaitable[None]]
    supports_dead_letters: bool = True
    supports_duplicate_delivery_switch: bool = True
    fifo_per_group: bool = True
    drains_on_close: bool = True
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())
