"""Choosing models by spec: fake, PROVIDER:MODEL, import paths, per-agent overrides,
record/replay wrapping, which provider errors are transient, and secrets kept out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel

from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.agents.cassette import RecordingChatModel, ReplayingChatModel
from agent_coordinator.agents.models import (
    DEFAULT_REQUEST_TIMEOUT,
    ModelChoice,
    is_transient_model_error,
    parse_model_options,
    redact_secrets,
    resolve_model,
)
from agent_coordinator.core.errors import BusinessFailure, ModelError, TransientFailure

AGENTS = ("inventory", "payment", "shipping")
SHARED_FAKE = ScriptedChatModel(model_name="shared")


def make_fake() -> ScriptedChatModel:
    return ScriptedChatModel(model_name="from-factory")


def not_a_model() -> str:
    return "nope"


@pytest.fixture(autouse=True)
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_fake_is_the_scripted_model() -> None:
    assert isinstance(resolve_model("fake"), ScriptedChatModel)


def test_openai_uses_the_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = resolve_model("openai:gpt-4o-mini")
    assert type(model).__name__ == "ChatOpenAI"
    assert model.model_name == "gpt-4o-mini"  # type: ignore[attr-defined]
    assert model.request_timeout == DEFAULT_REQUEST_TIMEOUT  # type: ignore[attr-defined]
    assert str(model.root_async_client.base_url) == "http://127.0.0.1:9/v1/"  # type: ignore[attr-defined]
    assert model.openai_api_key.get_secret_value() == "sk-from-env-123456"  # type: ignore[attr-defined]
    assert "sk-from-env-123456" not in repr(model)


def test_a_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")  # e.g. Ollama
    model = resolve_model("openai:llama3.1:8b")
    assert model.model_name == "llama3.1:8b"  # type: ignore[attr-defined]


def test_a_missing_key_is_named() -> None:
    with pytest.raises(ModelError, match=r"needs an API key: set the environment variable OPENAI_API_KEY \(or"):
        resolve_model("openai:gpt-4o-mini")


def test_a_missing_integration_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # importing it now fails
    with pytest.raises(ModelError) as caught:
        resolve_model("anthropic:claude-sonnet-4-5")
    assert str(caught.value) == (
        "model 'anthropic:claude-sonnet-4-5' needs the package 'langchain-anthropic', which is not installed; "
        "install it with: pip install langchain-anthropic"
    )


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("tests.e2e.test_models:ScriptedChatModel", "scripted"),
        ("tests.e2e.test_models:SHARED_FAKE", "shared"),
        ("tests.e2e.test_models:make_fake", "from-factory"),
    ],
)
def test_an_import_path_names_a_class_an_instance_or_a_factory(spec: str, name: str) -> None:
    model = resolve_model(spec)
    assert isinstance(model, ScriptedChatModel) and model.model_name == name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4o", r"'gpt-4o' is not a model spec; use `fake`, `PROVIDER:MODEL` \(providers: openai, anthropic"),
        ("nosuchprovider:model", r"'nosuchprovider' is neither a known provider nor an importable module"),
        ("tests.e2e.test_models:Missing", r"module 'tests.e2e.test_models' has no attribute 'Missing'"),
        ("tests.e2e.test_models:not_a_model", r"not_a_model\(\) returned str, not a LangChain BaseChatModel"),
        ("tests.e2e.test_models:AGENTS", r"is a tuple, not a chat model, class or factory"),
    ],
)
def test_a_bad_spec_is_explained(spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model(spec)


def test_model_flags_give_a_default_and_per_agent_overrides() -> None:
    choice = parse_model_options(["openai:gpt-4o", "payment=openai:gpt-4o-mini", "shipping = fake"])
    assert choice.default == "openai:gpt-4o"
    assert dict(choice.per_agent) == {"payment": "openai:gpt-4o-mini", "shipping": "fake"}
    assert [choice.spec_for(a) for a in AGENTS] == ["openai:gpt-4o", "openai:gpt-4o-mini", "fake"]
    assert parse_model_options(None) == ModelChoice()
    assert parse_model_options(["payment=tests.e2e.test_models:make_fake"]).default == "fake"


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        (["fake", "openai:gpt-4o"], {}, r"two default models, 'fake' and 'openai:gpt-4o'; name the agent"),
        (["payment=fake", "payment=openai:x"], {}, r"gives agent 'payment' two models: 'fake' and 'openai:x'"),
        (["payment="], {}, r"names agent 'payment' but no model; write payment=SPEC"),
        ([""], {}, r"--model '' is empty"),
        ([], {"record": "a", "replay": "b"}, r"--record and --replay exclude each other"),
    ],
)
def test_bad_model_flags_are_named(values: list[str], kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_model_options(values, **kwargs)


def test_models_are_shared_by_spec_and_an_unknown_agent_is_refused() -> None:
    models = parse_model_options(["fake", "shipping=tests.e2e.test_models:make_fake"]).models(AGENTS)
    assert models["inventory"] is models["payment"]
    assert isinstance(models["shipping"], ScriptedChatModel) and models["shipping"].model_name == "from-factory"
    with pytest.raises(ModelError, match=r"--model names 'paymnt', but there is no such agent; agents: inventory"):
        parse_model_options(["paymnt=fake"]).models(AGENTS)


def test_record_wraps_each_agent_and_replay_needs_no_provider(tmp_path: Path) -> None:
    recorded = parse_model_options(["fake"], record=tmp_path).models(AGENTS)
    assert all(isinstance(m, RecordingChatModel) for m in recorded.values())
    assert [m.agent for m in recorded.values()] == list(AGENTS)  # type: ignore[attr-defined]
    # Replaying resolves nothing: no package, no key, no network needed.
    replayed: dict[str, BaseChatModel] = parse_model_options(["anthropic:claude"], replay=tmp_path).models(AGENTS)
    assert all(isinstance(m, ReplayingChatModel) for m in replayed.values())


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (StatusError(429), True),
        (StatusError(503), True),
        (StatusError(408), True),
        (StatusError(401), False),
        (StatusError(400), False),
        (StatusError(404), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ModelError("replay miss"), False),
        (TransientFailure("later"), True),
        (BusinessFailure("no"), False),
        (RuntimeError("unknown"), True),
    ],
)
def test_which_model_errors_are_worth_retrying(error: Exception, transient: bool) -> None:
    assert is_transient_model_error(error) is transient


def test_openai_sdk_errors_are_classified_by_status() -> None:
    import httpx
    import openai

    request = httpx.Request("POST", "http://stub/v1/chat/completions")
    limited = openai.RateLimitError("slow down", response=httpx.Response(429, request=request), body=None)
    denied = openai.AuthenticationError("bad key", response=httpx.Response(401, request=request), body=None)
    assert is_transient_model_error(limited)
    assert not is_transient_model_error(denied)
    assert is_transient_model_error(openai.APITimeoutError(request=request))


def test_secrets_from_the_environment_are_redacted() -> None:
    environ = {"OPENAI_API_KEY": "sk-abcdef123", "GITHUB_TOKEN": "ghp_987654", "HOME": "/root", "SHORT_KEY": "abc"}
    text = "Incorrect API key provided: sk-abcdef123 (token ghp_987654) in /root; abc"
    assert redact_secrets(text, environ) == "Incorrect API key provided: *** (token ***) in /root; abc"


def test_the_supervisor_may_have_a_model_of_its_own(tmp_path: Path) -> None:
    choice = parse_model_options(["fake", "supervisor=tests.e2e.test_models:make_fake"])
    assert set(choice.models(AGENTS)) == set(AGENTS)  # the override is not an unknown agent
    supervisor = choice.model_for("supervisor")
    assert isinstance(supervisor, ScriptedChatModel) and supervisor.model_name == "from-factory"
    replayed = parse_model_options(["supervisor=openai:x"], replay=tmp_path).model_for("supervisor")
    assert isinstance(replayed, ReplayingChatModel) and replayed.agent == "supervisor"
