"""Choreography on event buses: the :class:`EventBus` seam, its backends, :func:`open_bus`,
and the mode itself (:class:`Choreography`, whose engine is :class:`Choreographer`).

``open_bus(url)`` picks a backend by URL scheme: ``memory://`` (the
:class:`InMemoryBus`), ``amqp://`` / ``amqps://`` (RabbitMQ, :mod:`agent_coordinator.bus.rabbitmq`)
and ``nats://`` / ``tls://`` (NATS JetStream, :mod:`agent_coordinator.bus.nats`). The broker
backends are sibling packages with one inner layout (``bus.py``, ``topology.py``,
``delivery.py``, ``errors.py``) on one base, :class:`~agent_coordinator.bus.broker.BrokerBus`
(URL options, close-once, stats, publish checks); docs/brokers/ is their operator's
guide. Adding a backend means writing a sibling package the same way, adding its
scheme to ``_BACKENDS`` below, and adding its config to the contract suite in
``tests/contract`` (one ``backend_<name>.py``).

Names on a shared broker: ``open_bus(url, namespace=...)`` gives a backend the
default names of one application, so that two applications on one broker never
share an exchange, queue, stream or subject by accident. The CLI passes
:func:`bus_namespace` of the workflow's name (and ``--bus-prefix`` /
``$COORDINATOR_BUS_PREFIX``): ``order-fulfilment`` becomes RabbitMQ's exchange
``order-fulfilment`` with queues ``order-fulfilment.<group>``, and NATS's stream
``order-fulfilment`` with subjects ``order-fulfilment.<type>``. Names set in the
URL's query (or as keyword options) win over the namespace's.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from agent_coordinator.bus.base import BusStats, DeadLetter, EventBus, Handler, Subscription
from agent_coordinator.bus.choreography import Choreographer, Choreography
from agent_coordinator.bus.memory import InMemoryBus
from agent_coordinator.core.errors import BusError

__all__ = [
    "BusStats",
    "Choreographer",
    "Choreography",
    "DeadLetter",
    "EventBus",
    "Handler",
    "InMemoryBus",
    "Subscription",
    "bus_namespace",
    "open_bus",
]

_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def bus_namespace(workflow: str, prefix: str = "") -> str:
    """The broker namespace of a workflow's buses: ``prefix + workflow``, with every
    run of characters that is not a letter, digit, ``_`` or ``-`` made one ``-`` (the
    characters every backend accepts in its names). Raises :class:`BusError` when
    nothing is left."""
    namespace = _NOT_IN_A_NAME.sub("-", f"{prefix}{workflow}").strip("-")
    if not namespace:
        raise BusError(
            f"cannot name broker objects after workflow {workflow!r} with prefix {prefix!r}: "
            "use letters, digits, '_' or '-'"
        )
    return namespace


def _open_memory(url: str, *, namespace: str | None = None, **options: Any) -> EventBus:
    # The brokers' rule for URL options (docs/brokers/README.md): nothing is ignored.
    # The memory bus takes its options as arguments, so any query is a mistake.
    parts = urlsplit(url)
    if parts.netloc or parts.path or parts.query:
        raise BusError(
            f"the memory bus takes no host, path or URL options ({url!r}): write memory:// "
            "and pass options as arguments, e.g. open_bus('memory://', max_deliveries=3)"
        )
    return InMemoryBus(**options)  # one process's bus: there is nobody to collide with


def _lazy_backend(module: str, attribute: str, extra: str, packages: tuple[str, ...]) -> Callable[..., EventBus]:
    """A factory that imports a broker backend on first use, so its client library
    stays an optional extra; a missing library is a BusError naming the extra."""

    def open_backend(url: str, **options: Any) -> EventBus:
        try:
            backend = getattr(importlib.import_module(module), attribute)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] not in packages:
                raise
            raise BusError(
                f"the {extra} bus backend needs {packages[0]}, which is not installed ({exc.name});"
                f" pip install 'agent-coordinator[{extra}]'"
            ) from exc
        bus: EventBus = backend.from_url(url, **options)
        return bus

    return open_backend


_open_rabbitmq = _lazy_backend(
    "agent_coordinator.bus.rabbitmq", "RabbitMQBus", "rabbitmq", ("aio_pika", "aiormq", "pamqp")
)
_open_nats = _lazy_backend("agent_coordinator.bus.nats", "JetStreamBus", "nats", ("nats",))


# scheme -> factory(url, **options). Read-only: backends are added here in code, not at run time.
_BACKENDS: Final[Mapping[str, Callable[..., EventBus]]] = MappingProxyType(
    {"memory": _open_memory, "amqp": _open_rabbitmq, "amqps": _open_rabbitmq, "nats": _open_nats, "tls": _open_nats}
)


def open_bus(url: str = "memory://", *, namespace: str | None = None, **options: Any) -> EventBus:
    """Open the event bus ``url`` names; ``options`` go to the backend's constructor.

    ``namespace`` (see :func:`bus_namespace`) derives a broker backend's default
    names (exchange and queue prefix; stream and subject prefix) from one
    application's name; None keeps the backend's own defaults. The memory bus has no
    names to derive.

    ``memory://`` gives an :class:`InMemoryBus` (options: ``max_deliveries``,
    ``redelivery_delay``, ``duplicate_delivery``, ``close_timeout``); ``amqp://...``
    a :class:`agent_coordinator.bus.rabbitmq.RabbitMQBus`; ``nats://...`` a
    :class:`agent_coordinator.bus.nats.JetStreamBus` (see their options). Raises
    :class:`~agent_coordinator.core.errors.BusError` for a scheme without a backend, listing the
    supported ones. The bus is not connected until first used; close it with
    ``await bus.close()``.
    """
    scheme = urlsplit(url).scheme.lower()
    supported = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
    factory = _BACKENDS.get(scheme)
    if factory is not None:
        return factory(url, namespace=namespace, **options)
    # Name only the scheme: the rest of a broker URL may carry credentials.
    shown = f"{scheme}://" if scheme else "no scheme"
    raise BusError(f"unknown bus URL scheme ({shown}); supported schemes: {supported}, e.g. open_bus('memory://')")
