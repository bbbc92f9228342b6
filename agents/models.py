"""Choosing chat models by name: ``fake``, ``PROVIDER:MODEL`` or ``package.module:Class``.

A *model spec* names the chat model an agent thinks with::

    fake                              the scripted fake (agents.fake), the default
    openai:gpt-4o-mini                langchain-openai's ChatOpenAI; OPENAI_BASE_URL points it at any
                                      OpenAI-compatible server (vLLM, Ollama, LM Studio)
    anthropic:claude-sonnet-4-5       langchain-anthropic's ChatAnthropic
    ollama:llama3.1:8b                langchain-ollama's ChatOllama (everything after the first ':' is the model)
    mypackage.models:MyChatModel      an import path: a BaseChatModel class (built without arguments),
                                      an instance, or a function returning one

:func:`resolve_model` turns one spec into a model; :func:`parse_model_options` reads
the repeated ``--model`` flags (one default, per-agent overrides such as
``payment=openai:gpt-4o-mini``) and the ``--record``/``--replay`` directories into a
:class:`ModelChoice`, whose :meth:`ModelChoice.models` builds every agent's model.

Secrets: API keys are read by the provider packages from the environment
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...); nothing here accepts, logs or
returns one. :func:`redact_secrets` masks the values of secret-looking environment
variables in a text (an exception message) before it is logged or put in an event.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from langchain_core.language_models import BaseChatModel

from agent_coordinator.agents.fake import ScriptedChatModel
from agent_coordinator.core.errors import CoordinatorError, ModelError
from agent_coordinator.core.model_errors import is_transient_model_error, redact_secrets

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "PROVIDERS",
    "SUPERVISOR",
    "ModelChoice",
    "Provider",
    "is_transient_model_error",
    "parse_model_options",
    "redact_secrets",
    "resolve_model",
]

DEFAULT_REQUEST_TIMEOUT: Final = 60.0
"""Seconds one provider request may take (OpenAI, Anthropic) before it counts as a
transient failure; the step's own timeout (``RunSettings.step_timeout``) bounds the
retries."""


@dataclass(frozen=True)
class Provider:
    """How ``PROVIDER:MODEL`` becomes a chat model.

    * ``package`` -- what to ``pip install`` (named in the error when it is missing);
    * ``module``, ``class_name`` -- the chat model class it provides, built as
      ``Class(model=MODEL, **defaults, **options)``;
    * ``key_variable`` -- the environment variable holding the API key, checked
      before building so a missing key is our error, not a deep provider one;
      ``keyless_when`` -- variables any of which makes a key optional (a local
      server behind a base URL needs none);
    * ``defaults`` -- constructor arguments we choose (timeouts, retries).
    """

    package: str
    module: str
    class_name: str
    key_variable: str | None = None
    keyless_when: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)


PROVIDERS: Final[Mapping[str, Provider]] = MappingProxyType(
    {
        "openai": Provider(
            "langchain-openai",
            "langchain_openai",
            "ChatOpenAI",
            key_variable="OPENAI_API_KEY",
            keyless_when=("OPENAI_BASE_URL", "OPENAI_API_BASE"),
            defaults={"timeout": DEFAULT_REQUEST_TIMEOUT},
        ),
        "anthropic": Provider(
            "langchain-anthropic",
            "langchain_anthropic",
            "ChatAnthropic",
            key_variable="ANTHROPIC_API_KEY",
            defaults={"timeout": DEFAULT_REQUEST_TIMEOUT},
        ),
        "ollama": Provider("langchain-ollama", "langchain_ollama", "ChatOllama"),
        "google_genai": Provider(
            "langchain-google-genai", "langchain_google_genai", "ChatGoogleGenerativeAI", key_variable="GOOGLE_API_KEY"
        ),
        "mistralai": Provider(
            "langchain-mistralai", "langchain_mistralai", "ChatMistralAI", key_variable="MISTRAL_API_KEY"
        ),
        "groq": Provider("langchain-groq", "langchain_groq", "ChatGroq", key_variable="GROQ_API_KEY"),
    }
)
"""The providers ``PROVIDER:MODEL`` knows; any other LangChain chat model plugs in by import path."""

FAKE: Final = "fake"
SUPERVISOR: Final = "supervisor"
"""The participant name of the model-driven supervisor, for ``--model supervisor=SPEC``."""
_FORMS = "use `fake`, `PROVIDER:MODEL` (providers: {providers}) or an import path `package.module:Class`"
_AGENT_NAME = re.compile(r"^[^:=\s]+$")


def _forms() -> str:
    return _FORMS.format(providers=", ".join(PROVIDERS))


def resolve_model(spec: str, *, options: Mapping[str, Any] | None = None) -> BaseChatModel:
    """The chat model ``spec`` names (see the module docstring for the forms).

    ``options`` are extra constructor arguments for a provider's class (for example
    ``{"max_retries": 0, "http_async_client": client}``); they override our
    defaults (a :data:`DEFAULT_REQUEST_TIMEOUT` request timeout for OpenAI and
    Anthropic). They are ignored for ``fake`` and for import paths.

    The provider's package is imported only when its spec is resolved, so an
    installation needs only the integrations it uses. The provider SDK's own retries
    stay on (ChatOpenAI and ChatAnthropic retry 429s, 5xx and timeouts twice,
    honouring ``Retry-After``); the step runner retries failed calls on top of them,
    within the step's timeout. Pass ``options={"max_retries": 0}`` to leave retrying
    to the runner alone.

    Raises:
        ModelError: the spec has none of the forms; its integration package is not
            installed (the message says which to ``pip install``); its API key
            variable is unset; the import path does not lead to a chat model; or
            the provider's class refused the arguments. Messages never contain a
            secret.
    """
    spec = spec.strip()
    if spec == FAKE:
        return ScriptedChatModel()
    prefix, sep, rest = spec.partition(":")
    if not sep or not prefix or not rest:
        raise ModelError(f"model {spec!r} is not a model spec; {_forms()}")
    provider = PROVIDERS.get(prefix)
    if provider is not None:
        return _from_provider(spec, provider, rest, dict(options or {}))
    return _from_import_path(spec, prefix, rest)


def _from_provider(spec: str, provider: Provider, model: str, options: dict[str, Any]) -> BaseChatModel:
    try:
        module = importlib.import_module(provider.module)
    except ImportError as exc:
        raise ModelError(
            f"model {spec!r} needs the package {provider.package!r}, which is not installed; "
            f"install it with: pip install {provider.package}"
        ) from exc
    cls = getattr(module, provider.class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseChatModel)):
        raise ModelError(
            f"model {spec!r}: {provider.module}.{provider.class_name} is not a chat model class; "
            f"upgrade it with: pip install -U {provider.package}"
        )
    variable = provider.key_variable
    if variable and not os.environ.get(variable) and not any(os.environ.get(v) for v in provider.keyless_when):
        local = f" (or {' / '.join(provider.keyless_when)} for a local server that needs no key)"
        raise ModelError(
            f"model {spec!r} needs an API key: set the environment variable {variable}"
            f"{local if provider.keyless_when else ''}; keys are only read from the environment"
        )
    arguments: dict[str, Any] = {**provider.defaults, **options, "model": model}
    if variable and not os.environ.get(variable) and "api_key" not in arguments:
        # A local OpenAI-compatible server ignores the key, but the client insists on one.
        arguments["api_key"] = "unused"
    try:
        instance = cls(**arguments)
    except Exception as exc:  # a provider's validation errors are its own types
        raise ModelError(
            f"model {spec!r}: {provider.class_name} refused its configuration: {redact_secrets(str(exc))}"
        ) from None
    return instance


def _from_import_path(spec: str, module_name: str, attribute: str) -> BaseChatModel:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"model {spec!r}: {module_name!r} is neither a known provider nor an importable module "
            f"({type(exc).__name__}: {exc}); {_forms()}"
        ) from exc
    target = getattr(module, attribute, None)
    if target is None:
        raise ModelError(f"model {spec!r}: module {module_name!r} has no attribute {attribute!r}")
    if isinstance(target, BaseChatModel):
        return target
    if not callable(target):
        raise ModelError(f"model {spec!r} is a {type(target).__name__}, not a chat model, class or factory")
    try:
        built = target()
    except CoordinatorError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model {spec!r}: calling {attribute}() failed: {type(exc).__name__}: {redact_secrets(str(exc))}"
        ) from None
    if not isinstance(built, BaseChatModel):
        raise ModelError(
            f"model {spec!r}: {attribute}() returned {type(built).__name__}, not a LangChain BaseChatModel"
        )
    return built


# -- the --model flags --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """Which model each agent gets, and whether their conversations are recorded or replayed.

    * ``default`` -- the spec of every agent without an override (``fake`` unless given);
    * ``per_agent`` -- agent name -> spec;
    * ``record`` -- a cassette directory every model request and answer is written
      to (:class:`agent_coordinator.agents.cassette.RecordingChatModel`);
    * ``replay`` -- a cassette directory answers come from instead of any model
      (:class:`agent_coordinator.agents.cassette.ReplayingChatModel`; the specs are then not resolved,
      so replaying needs neither the provider packages nor keys nor a network).

    At most one of ``record`` and ``replay`` is set.
    """

    default: str = FAKE
    per_agent: Mapping[str, str] = field(default_factory=dict)
    record: Path | None = None
    replay: Path | None = None

    def spec_for(self, agent: str) -> str:
        """The spec ``agent`` gets: its override, else the default."""
        return self.per_agent.get(agent, self.default)

    def models(self, agents: Iterable[str], *, options: Mapping[str, Any] | None = None) -> dict[str, BaseChatModel]:
        """A chat model for each name in ``agents``, wrapped for recording or replay.

        Agents with the same spec share one model instance (chat models are
        stateless and safe to share). ``options`` go to :func:`resolve_model`. An
        override for ``supervisor`` (the model-driven supervisor, see
        :meth:`model_for`) is allowed even when it is not among ``agents``.

        Raises:
            ModelError: an override names an agent that is not in ``agents`` (the
                message lists them), or a spec cannot be resolved.
        """
        names = list(dict.fromkeys(agents))
        unknown = sorted(set(self.per_agent) - set(names) - {SUPERVISOR})
        if unknown:
            raise ModelError(
                f"--model names {', '.join(repr(n) for n in unknown)}, but there is no such agent; "
                f"agents: {', '.join(names)}"
            )
        resolved: dict[str, BaseChatModel] = {}
        chosen: dict[str, BaseChatModel] = {}
        for name in names:
            spec = self.spec_for(name)
            if self.replay is None and spec not in resolved:
                resolved[spec] = resolve_model(spec, options=options)
            chosen[name] = self._wrapped(name, resolved.get(spec))
        return chosen

    def model_for(self, name: str, *, options: Mapping[str, Any] | None = None) -> BaseChatModel:
        """The model of one participant ``name`` (e.g. ``supervisor``), wrapped for
        recording or replay like the agents' (its requests are keyed under ``name``).

        Raises:
            ModelError: the spec cannot be resolved.
        """
        model = None if self.replay is not None else resolve_model(self.spec_for(name), options=options)
        return self._wrapped(name, model)

    def _wrapped(self, name: str, model: BaseChatModel | None) -> BaseChatModel:
        from agent_coordinator.agents.cassette import RecordingChatModel, ReplayingChatModel

        if self.replay is not None:
            return ReplayingChatModel(directory=self.replay, agent=name)
        assert model is not None
        if self.record is not None:
            return RecordingChatModel(inner=model, directory=self.record, agent=name)
        return model


def parse_model_options(
    values: Sequence[str] | None, *, record: str | Path | None = None, replay: str | Path | None = None
) -> ModelChoice:
    """Read repeated ``--model`` values (and ``--record``/``--replay``) into a :class:`ModelChoice`.

    Each value is either a spec (the default for every agent; at most one) or
    ``AGENT=SPEC`` (an override for one agent; at most one per agent). No values:
    every agent gets ``fake``. Specs are only checked for shape here; they are
    resolved by :meth:`ModelChoice.models`.

    Raises:
        ModelError: two defaults, two overrides of one agent, an empty spec, or both
            ``record`` and ``replay``; the message names the offending value.
    """
    default: str | None = None
    per_agent: dict[str, str] = {}
    for raw in values or ():
        value = raw.strip()
        name, sep, spec = value.partition("=")
        name = name.strip()
        if sep and _AGENT_NAME.match(name):
            spec = spec.strip()
            if not spec:
                raise ModelError(f"--model {raw!r} names agent {name!r} but no model; write {name}=SPEC ({_forms()})")
            if name in per_agent:
                raise ModelError(f"--model gives agent {name!r} two models: {per_agent[name]!r} and {spec!r}")
            per_agent[name] = spec
            continue
        if not value:
            raise ModelError(f"--model {raw!r} is empty; {_forms()}")
        if default is not None:
            raise ModelError(
                f"--model gives two default models, {default!r} and {value!r}; "
                f"name the agent for an override, e.g. payment={value}"
            )
        default = value
    if record is not None and replay is not None:
        raise ModelError("--record and --replay exclude each other: record a cassette once, then replay it")
    return ModelChoice(
        default=default or FAKE,
        per_agent=MappingProxyType(per_agent),
        record=Path(record) if record is not None else None,
        replay=Path(replay) if replay is not None else None,
    )
