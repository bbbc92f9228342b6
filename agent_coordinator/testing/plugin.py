"""Pytest fixtures for testing a workflow deterministically, without writing a model class.

Opt in, in the root ``conftest.py`` of a test suite::

    pytest_plugins = ["agent_coordinator.testing"]

(or ``pytest -p agent_coordinator.testing``). Loading it imports nothing heavy: each
fixture imports what it uses when a test asks for it.

=====================  ========================================================================
fixture                gives
=====================  ========================================================================
``fake_model``         a :class:`~agent_coordinator.agents.fake.ScriptedChatModel` that does what each task asks
``scripted_model``     a factory: ``scripted_model(policy)`` or ``scripted_model(*answers, then=)``
``replaying_model``    a factory: ``replaying_model(directory, agent=..., record_with=...)``, a
                       :class:`~agent_coordinator.agents.cassette.ReplayingChatModel`; a relative directory is
                       taken from the test file's folder; ``pytest --record-cassettes`` records
                       with the ``record_with`` model instead
``app_environment``    the environment of your ``workflow_app`` fixture's app (its agents,
                       services and ``await .check(results)``), closed after the test
``memory_bus``         an :class:`~agent_coordinator.bus.memory.InMemoryBus`, closed after the test
=====================  ========================================================================

``app_environment`` and ``memory_bus`` are async fixtures and need ``pytest-asyncio``
(``pip install pytest-asyncio``); the others work in any test. See ``docs/testing.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:  # each fixture imports what it uses, so loading the plugin stays cheap
    from langchain_core.messages import AIMessage

    from agent_coordinator.agents.cassette import RecordingChatModel, ReplayingChatModel
    from agent_coordinator.agents.fake import Policy, ScriptedChatModel
    from agent_coordinator.bus.memory import InMemoryBus
    from agent_coordinator.core.app import AppEnvironment, WorkflowApp

__all__ = [
    "RECORD_OPTION",
    "ReplayingModelFactory",
    "ScriptedModelFactory",
    "app_environment",
    "fake_model",
    "memory_bus",
    "pytest_addoption",
    "replaying_model",
    "scripted_model",
    "workflow_app",
]

_F = TypeVar("_F", bound=Callable[..., Any])

ScriptedModelFactory = Callable[..., "ScriptedChatModel"]
"""``scripted_model(policy)`` or ``scripted_model(*answers, then=follow_task)``."""

ReplayingModelFactory = Callable[..., "ReplayingChatModel | RecordingChatModel"]
"""``replaying_model(directory, agent="model", record_with=None)``."""

RECORD_OPTION = "--record-cassettes"
RECORD_OPTION_DEST = "agent_coordinator_record_cassettes"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--record-cassettes``: ``replaying_model`` records through its ``record_with`` model."""
    parser.addoption(
        RECORD_OPTION,
        action="store_true",
        dest=RECORD_OPTION_DEST,
        help="agent-coordinator: replaying_model(..., record_with=SPEC) records with that model instead of replaying",
    )


@pytest.fixture
def fake_model() -> ScriptedChatModel:
    """A chat model that makes exactly the tool call each task message asks for
    (:func:`agent_coordinator.agents.fake.follow_task`), with usage metadata; deterministic and free."""
    from agent_coordinator.agents.fake import ScriptedChatModel

    return ScriptedChatModel()


@pytest.fixture
def scripted_model() -> ScriptedModelFactory:
    """A factory of scripted chat models.

    * ``scripted_model(policy)`` -- answers with ``policy(messages, tools)``, e.g.
      ``misbehave("wrong_value")`` or a function of your own;
    * ``scripted_model(AIMessage(...), ..., then=follow_task)`` -- the k-th answer of
      each conversation is the k-th given (a message or a policy), then ``then``
      answers (see :func:`agent_coordinator.agents.fake.scripted`).
    """

    from langchain_core.messages import AIMessage

    from agent_coordinator.agents.fake import ScriptedChatModel, follow_task, scripted

    def build(*answers: AIMessage | Policy, then: Policy | None = None) -> ScriptedChatModel:
        if len(answers) == 1 and then is None and not isinstance(answers[0], AIMessage):
            return ScriptedChatModel(policy=answers[0])
        return ScriptedChatModel(policy=scripted(*answers, then=then or follow_task))

    return build


@pytest.fixture
def replaying_model(request: pytest.FixtureRequest) -> ReplayingModelFactory:
    """A factory of models answering from a cassette: ``replaying_model(directory,
    agent="payment", record_with=None)``.

    * A relative ``directory`` is resolved against the folder of the requesting test
      file, so ``replaying_model("cassettes/travel")`` works from any working directory.
    * Replaying: a request that is not in the cassette raises
      :class:`~agent_coordinator.core.errors.ModelError` naming ``agent`` and showing a diff
      against the nearest recorded request; no model, key or network is needed.
    * With ``pytest --record-cassettes`` the factory instead returns a
      :class:`~agent_coordinator.agents.cassette.RecordingChatModel` around the model ``record_with``
      names (a spec for :func:`agent_coordinator.agents.models.resolve_model`, e.g.
      ``"openai:gpt-4o-mini"``; its key comes from the environment). Requests already
      in the cassette are answered from it; empty the directory to record afresh.
    """
    from agent_coordinator.agents.cassette import RecordingChatModel, ReplayingChatModel
    from agent_coordinator.agents.models import resolve_model

    base = Path(request.path).parent
    recording = bool(request.config.getoption(RECORD_OPTION_DEST))

    def build(
        directory: str | Path, agent: str = "model", *, record_with: str | None = None
    ) -> ReplayingChatModel | RecordingChatModel:
        path = Path(directory)
        path = path if path.is_absolute() else base / path
        if not recording:
            return ReplayingChatModel(path, agent=agent)
        if record_with is None:
            raise pytest.UsageError(
                f"--record-cassettes: replaying_model({str(directory)!r}, agent={agent!r}) has no record_with; "
                "name the model to record with, e.g. record_with='openai:gpt-4o-mini'"
            )
        return RecordingChatModel(inner=resolve_model(record_with), directory=path, agent=agent)

    return build


def _async_fixture(function: _F) -> _F:
    """``pytest_asyncio.fixture(function)``; without pytest-asyncio, a fixture of the
    same name that fails the test saying what to install."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
        name = function.__name__

        def unavailable() -> None:
            pytest.fail(f"the {name} fixture is async and needs pytest-asyncio: pip install pytest-asyncio")

        return cast(_F, pytest.fixture(name=name)(unavailable))
    return cast(_F, pytest_asyncio.fixture(function))


@pytest.fixture
def workflow_app() -> WorkflowApp:
    """The app :func:`app_environment` opens. Define your own ``workflow_app`` fixture
    (in a ``conftest.py`` or the test module) returning your :class:`WorkflowApp`;
    this default fails, saying so."""
    pytest.fail(
        "the app_environment fixture needs a workflow_app fixture: define one returning your WorkflowApp, "
        "e.g. `@pytest.fixture\ndef workflow_app(): return my_package.travel:app`"
    )


@_async_fixture
async def app_environment(workflow_app: WorkflowApp) -> AsyncIterator[AppEnvironment]:
    """``workflow_app``'s environment with its defaults (for the flagship: the
    sandbox services in process and the scripted fake models), closed after the
    test: ``.agents`` to run with, ``.validation_context`` for inputs, and
    ``await .check(results)`` -- the app's own invariants over the services' state
    (empty when consistent)."""
    from agent_coordinator.core.app import AppOptions

    async with workflow_app.environment(AppOptions()) as environment:
        yield environment


@_async_fixture
async def memory_bus() -> AsyncIterator[InMemoryBus]:
    """A fresh :class:`~agent_coordinator.bus.memory.InMemoryBus` for a choreography run
    (``open_coordinator(..., mode=Choreography(bus=memory_bus))``), closed after
    the test."""
    from agent_coordinator.bus.memory import InMemoryBus

    bus = InMemoryBus()
    try:
        yield bus
    finally:
        await bus.close()
