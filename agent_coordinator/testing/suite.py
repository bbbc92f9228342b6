"""What the conformance suites share (:mod:`.bus_contract`, :mod:`.event_log_contract`,
:mod:`.participant_store_contract`): capability flags that skip, a factory fixture
the subclass must define, and handles closed after each test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, ParamSpec, Protocol, TypeVar

import pytest

__all__ = ["ConformanceSuite", "closed_after"]

_P = ParamSpec("_P")


class _Closes(Protocol):
    async def close(self) -> None: ...


_H = TypeVar("_H", bound=_Closes)


class ConformanceSuite:
    """The base of every conformance suite: ``Test<Yours>(Suite)`` sets the suite's
    capability flags (class attributes) and defines its factory fixture."""

    def _require(self, capability: str) -> None:
        """Skip the test unless the subclass claims ``capability`` (a flag set to True)."""
        if not getattr(self, capability):
            pytest.skip(f"{type(self).__name__} does not claim {capability}")

    def _missing_factory(self, seam: str, fixture: str, example: str) -> NoReturn:
        """Fail a test whose subclass did not define the ``fixture`` it must."""
        pytest.fail(
            f"{type(self).__name__} runs the {seam} contract but has no {fixture} fixture: "
            f"define one returning {example}"
        )


@contextlib.asynccontextmanager
async def closed_after(open_: Callable[_P, Awaitable[_H]]) -> AsyncIterator[Callable[_P, Awaitable[_H]]]:
    """``open_``, with every handle it opened closed (in opening order) on leaving the block."""
    opened: list[_H] = []

    async def open_tracked(*args: _P.args, **kwargs: _P.kwargs) -> _H:
        handle = await open_(*args, **kwargs)
        opened.append(handle)
        return handle

    try:
        yield open_tracked
    finally:
        for handle in opened:
            await handle.close()
