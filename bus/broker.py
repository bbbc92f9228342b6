"""What the broker buses share: :class:`BrokerBus`, the base of
:class:`~agent_coordinator.bus.rabbitmq.RabbitMQBus` and
:class:`~agent_coordinator.bus.nats.JetStreamBus`.

One policy for a bus URL's query (docs/brokers/README.md, "Options in the URL"):

* a key is either one of the bus's own options (removed from the URL and given to
  the constructor) or one of the client library's connection options (checked, and
  left in the URL for the library to read);
* any other key is refused with a :class:`~agent_coordinator.core.errors.BusError`
  naming it and listing the accepted ones -- a misspelt option must not be silently
  ignored;
* a value of the wrong type is refused naming the option and the type wanted;
* no message ever shows the password of the URL (only ``host:port``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from agent_coordinator.bus.backend import BusBackend
from agent_coordinator.bus.base import DeadLetter
from agent_coordinator.core.errors import BusClosed, BusError

__all__ = ["BrokerBus", "OptionKind", "split_url_options"]

OptionKind = type[str] | type[int] | type[float] | type[bool] | frozenset[str]
"""What a URL option's value must be: ``str`` (anything), ``int``, ``float``,
``bool`` (``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off``), or one of a
set of words."""

_TRUE: frozenset[str] = frozenset({"1", "true", "yes", "on"})
_FALSE: frozenset[str] = frozenset({"0", "false", "no", "off"})


def split_url_options(
    url: str,
    *,
    broker: str,
    bus_options: Mapping[str, OptionKind],
    client_options: Mapping[str, OptionKind],
) -> tuple[str, dict[str, Any]]:
    """Split ``url`` into the URL the client library gets (its own options kept in
    the query) and this bus's options, typed.

    Raises :class:`BusError` for a key that is neither a bus option nor a client
    option (naming the key, listing the accepted ones) and for a value that is not of
    the option's kind (naming the option). ``broker`` names the bus in messages; the
    URL's password never appears in them.
    """
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else ""
    accepted = ", ".join(sorted({*bus_options, *client_options}))
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = bus_options.get(key, client_options.get(key))
        if kind is None:
            raise BusError(redact(f"unknown {broker} bus URL option {key!r}; the query may set: {accepted}", password))
        typed = _typed(key, value, kind, broker=broker, password=password)
        if key in bus_options:
            options[key] = typed
        else:
            kept.append((key, value))  # the library parses its own options: pass them on verbatim
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def _typed(key: str, value: str, kind: OptionKind, *, broker: str, password: str) -> Any:
    wanted: str
    if isinstance(kind, frozenset):
        if value in kind:
            return value
        wanted = f"one of {', '.join(sorted(kind))}"
    elif kind is bool:
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        wanted = "a boolean (1/0, true/false, yes/no, on/off)"
    elif kind is int or kind is float:
        try:
            return kind(value)
        except ValueError:
            wanted = "an integer" if kind is int else "a number"
    else:
        return value
    raise BusError(redact(f"{broker} bus URL option {key}={value!r} is not {wanted}", password))


def redact(text: str, password: str) -> str:
    """``text`` with ``password`` (when there is one) replaced by ``***``."""
    return text.replace(password, "***") if password else text


class BrokerBus(BusBackend, abc.ABC):
    """The common part of a bus on a broker, on top of :class:`~agent_coordinator.bus.backend.BusBackend`.

    A subclass names its URL ``schemes``, its own ``url_options`` and the client
    library's ``client_url_options`` (see :func:`split_url_options`), the names a
    namespace gives it (``_names_of``), and implements ``_list_dead_letters``. It gets
    :meth:`from_url` (what :func:`agent_coordinator.bus.open_bus` calls), the scheme
    check, ``_where`` (``host:port`` for messages) and ``_redact`` (for the texts of
    client errors, which may quote the URL).
    """

    schemes: ClassVar[tuple[str, ...]]
    """The URL schemes this bus takes (``open_bus`` maps them to it)."""
    example_url: ClassVar[str]
    url_options: ClassVar[Mapping[str, OptionKind]]
    """The bus's own options a URL's query may set: constructor keywords, with their kinds."""
    client_url_options: ClassVar[Mapping[str, OptionKind]]
    """The client library's options a URL's query may set (left in the URL for it)."""

    def __init__(self, url: str, *, default_port: int) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in self.schemes:
            # Name only the scheme: the rest of the URL may carry credentials.
            raise ValueError(
                f"a {self._kind} bus URL starts with {' or '.join(f'{s}://' for s in self.schemes)}"
                f" (got {parts.scheme or 'no scheme'}://...), e.g. {self.example_url}"
            )
        super().__init__()
        self.url = url
        # Where the broker is, for messages: never the user or password.
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or default_port}"
        self._password = unquote(parts.password) if parts.password else ""

    @classmethod
    def from_url(cls, url: str, *, namespace: str | None = None, **options: Any) -> Self:
        """The bus for ``url``: the factory :func:`agent_coordinator.bus.open_bus` calls.

        ``namespace`` (one application's name, :func:`agent_coordinator.bus.bus_namespace`)
        sets the default names of the broker objects (see the subclass), so that two
        applications on one broker share nothing; without it the constructor's
        defaults apply. The URL's query may set the bus's ``url_options`` -- so that a
        command line (``coordinator worker --bus URL``) can give each deployment or test
        names of its own -- and the client library's ``client_url_options``. Keyword
        ``options`` win over the URL's, and both over the namespace's names.

        Raises :class:`BusError` for an unknown query key (listing the accepted ones),
        a value of the wrong type, or an option out of range.
        """
        url, from_query = split_url_options(
            url, broker=cls._kind, bus_options=cls.url_options, client_options=cls.client_url_options
        )
        named = cls._names_of(namespace) if namespace else {}
        try:
            return cls(url, **{**named, **from_query, **options})
        except ValueError as exc:
            raise BusError(f"invalid {cls._kind} bus option: {exc}") from exc

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter on the broker, oldest first -- of all groups, whichever
        process dead-lettered them -- read without consuming them. Raises
        :class:`BusClosed` after :meth:`close` (open a new bus to inspect the broker)."""
        if self._closed:
            raise BusClosed("cannot read dead letters: the bus is closed; open a new bus to inspect the broker")
        return await self._list_dead_letters()

    def _redact(self, text: str) -> str:
        return redact(text, self._password)

    @classmethod
    @abc.abstractmethod
    def _names_of(cls, namespace: str) -> dict[str, str]:
        """The constructor keywords naming the broker objects of ``namespace``."""

    @abc.abstractmethod
    async def _list_dead_letters(self) -> list[DeadLetter]:
        """The dead letters on the broker, oldest first (the bus is open)."""
