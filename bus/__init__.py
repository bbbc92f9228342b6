"""Event buses: the :class:`EventBus` seam, its backends, and :func:`open_bus`.

``open_bus(url)`` picks a backend by URL scheme; today that is ``memory://`` (the
:class:`InMemoryBus`). Adding a backend means writing a sibling module that
implements :class:`EventBus`, adding its scheme to ``_BACKENDS`` below, and
appending its config to the contract suite in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from bus.base import BusStats, DeadLetter, EventBus, Handler, Subscription
from bus.memory import InMemoryBus
from coordinator.errors import BusError

__all__ = [
    "BusStats",
    "DeadLetter",
    "EventBus",
    "Handler",
    "InMemoryBus",
    "Subscription",
    "open_bus",
]


def _open_memory(url: str, **options: Any) -> EventBus:
    return InMemoryBus(**options)


# scheme -> factory(url, **options). Read-only: backends are added here in code, not at run time.
_BACKENDS: Final[Mapping[str, Callable[..., EventBus]]] = MappingProxyType({"memory": _open_memory})

# Schemes we mean to support; named in the error so the message says "not yet", not "unknown".
_PLANNED: Final[Mapping[str, str]] = MappingProxyType(
    {"amqp": "RabbitMQ", "amqps": "RabbitMQ", "nats": "NATS", "tls": "NATS"}
)


def open_bus(url: str = "memory://", **options: Any) -> EventBus:
    """Open the event bus ``url`` names; ``options`` go to the backend's constructor.

    ``memory://`` gives an :class:`InMemoryBus` (options: ``max_deliveries``,
    ``redelivery_delay``, ``duplicate_delivery``, ``close_timeout``). Raises
    :class:`~coordinator.errors.BusError` for a scheme without a backend, listing the
    supported ones. The bus is not connected until first used; close it with
    ``await bus.close()``.
    """
    scheme = urlsplit(url).scheme.lower()
    supported = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
    factory = _BACKENDS.get(scheme)
    if factory is not None:
        return factory(url, **options)
    # Name only the scheme: the rest of a broker URL may carry credentials.
    if scheme in _PLANNED:
        raise BusError(
            f"the {_PLANNED[scheme]} bus backend ({scheme}://) is not available yet;"
            f" supported schemes: {supported} -- use open_bus('memory://') for now"
        )
    shown = f"{scheme}://" if scheme else "no scheme"
    raise BusError(f"unknown bus URL scheme ({shown}); supported schemes: {supported}, e.g. open_bus('memory://')")
