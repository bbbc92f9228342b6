"""Cassettes: record a chat model's conversations once, replay them exactly forever.

A cassette is a directory with one JSON file per distinct model request::

    examples/orders/cassettes/
        0b6f2c...e1.json    {"agent": "payment", "key": "0b6f2c...e1", "request": {...}, "response": {...}}
        ...

The *key* of a request is the SHA-256 of its normalised form (:func:`normalise_request`):
every message's role, content, tool calls (name, arguments, id) and tool call id,
and every bound tool's name and JSON schema -- nothing else (no message ids, no
timestamps, no model parameters), so the same conversation gives the same key in
any process, mode or order of runs. Files are written with sorted keys and
indentation, so a cassette diffs well in review.

* :class:`RecordingChatModel` wraps a real model: a request already in the
  cassette is answered from it (so a recording session is consistent with its own
  replay), any other is sent to the wrapped model and its answer written.
* :class:`ReplayingChatModel` answers only from the cassette; the answer is the
  recorded :class:`AIMessage` itself (content, tool calls and their ids, usage
  metadata, response metadata, message id). A request that is not there raises
  :class:`~agent_coordinator.core.errors.ModelError` naming the agent and showing a unified
  diff against the nearest recorded request.

Both are real :class:`BaseChatModel` s with ``bind_tools``, so they go wherever a
model goes (an :class:`~agent_coordinator.core.agent.Agent`, ``order_agents(model=...)``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from agent_coordinator.core.errors import ModelError

__all__ = [
    "CASSETTE_FORMAT",
    "RecordedExchange",
    "RecordingChatModel",
    "ReplayingChatModel",
    "load_cassette",
    "normalise_request",
    "request_key",
]

CASSETTE_FORMAT: Final = 1
"""Written into every file as ``"format"``; a reader refuses other versions."""

_ROLES: Final = {"human": "user", "ai": "assistant"}
_MAX_DIFF_LINES: Final = 80

ToolSpec = dict[str, Any]


# -- keys ---------------------------------------------------------------------------------


def _normal_message(message: BaseMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": _ROLES.get(message.type, message.type), "content": message.content}
    if isinstance(message, AIMessage) and message.tool_calls:
        entry["tool_calls"] = [
            {"name": call["name"], "args": call["args"], "id": call.get("id")} for call in message.tool_calls
        ]
    if isinstance(message, ToolMessage):
        entry["tool_call_id"] = message.tool_call_id
    return entry


def _normal_tool(spec: ToolSpec) -> dict[str, Any]:
    function = spec.get("function", spec)
    return {"name": function.get("name"), "parameters": function.get("parameters", {})}


def normalise_request(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec] | None) -> dict[str, Any]:
    """What identifies a request: ``{"messages": [...], "tools": [...]}``.

    Each message becomes ``{"role", "content"}`` (roles ``system``, ``user``,
    ``assistant``, ``tool``), plus ``tool_calls`` (name, args, id) for an
    assistant message that made calls and ``tool_call_id`` for a tool message.
    Each tool (OpenAI format, as ``bind_tools`` converts it) becomes ``{"name",
    "parameters"}``. Order is kept: it is part of what a model is shown.
    """
    return {
        "messages": [_normal_message(m) for m in messages],
        "tools": [_normal_tool(t) for t in tools or ()],
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_key(request: dict[str, Any]) -> str:
    """The stable key of a normalised request: SHA-256 of its canonical JSON, in hex."""
    return hashlib.sha256(_canonical(request).encode()).hexdigest()


# -- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedExchange:
    """One cassette file: who asked (``agent``), the normalised ``request`` and its
    ``key``, the ``answer``, the answering ``model``'s name if known, and the file."""

    agent: str
    key: str
    request: dict[str, Any]
    answer: AIMessage
    model: str | None
    path: Path

    @classmethod
    def read(cls, path: Path) -> RecordedExchange:
        """Load one file; :class:`ModelError` names the file if it is not a cassette entry."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CASSETTE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {CASSETTE_FORMAT}")
            (answer,) = messages_from_dict([data["response"]])
            if not isinstance(answer, AIMessage):
                raise ValueError(f"the response is a {type(answer).__name__}, not an AIMessage")
            return cls(
                agent=str(data["agent"]),
                key=str(data["key"]),
                request=data["request"],
                answer=answer,
                model=data.get("model"),
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cassette file {path} is not a recorded exchange: {exc}") from exc

    def write(self) -> None:
        """Write the file atomically (a concurrent reader sees the old file or the new one)."""
        document = {
            "format": CASSETTE_FORMAT,
            "agent": self.agent,
            "key": self.key,
            "model": self.model,
            "request": self.request,
            "response": message_to_dict(self.answer),
        }
        text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.key[:12]}-", suffix=".partial")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _path(directory: Path, key: str) -> Path:
    return directory / f"{key}.json"


def load_cassette(directory: str | Path) -> list[RecordedExchange]:
    """Every exchange recorded in ``directory``, sorted by file name.

    Raises:
        ModelError: the directory does not exist, or a file in it is not an exchange.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ModelError(f"no cassette at {path}: record one first (--record {path})")
    return [RecordedExchange.read(file) for file in sorted(path.glob("*.json"))]


# -- the models ---------------------------------------------------------------------------


class _CassetteModel(BaseChatModel):
    """What both cassette models share: tool binding and the request key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    directory: Path
    """The cassette: a directory of ``<key>.json`` files."""
    agent: str = "model"
    """Whose conversations these are; written to each file and named in a replay miss."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` (converted with ``convert_to_openai_tool``); they become part of the key.

        ``tool_choice`` and other keyword arguments are passed on to a recorded
        model's own ``bind_tools``; they are not part of the key.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _request(self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec] | None) -> tuple[dict[str, Any], str]:
        request = normalise_request(messages, tools)
        return request, request_key(request)

    def _recorded(self, key: str) -> RecordedExchange | None:
        path = _path(self.directory, key)
        return RecordedExchange.read(path) if path.exists() else None


def _result(answer: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=answer)])


class RecordingChatModel(_CassetteModel):
    """``inner``, with every request and answer written to the cassette ``directory``.

    A request whose key is already in the cassette is answered from the file without
    calling ``inner``, so what a recording session saw is exactly what its replay
    sees (delete the directory to record from scratch). Otherwise ``inner`` is
    called (its tools bound with its own ``bind_tools``) and its answer written as
    ``<key>.json`` before it is returned. Errors of ``inner`` pass through
    unrecorded, so the caller's retry policy applies to them.
    """

    inner: BaseChatModel
    """The model that really answers (a provider's chat model, or a fake)."""

    @property
    def _llm_type(self) -> str:
        return "recording-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "agent": self.agent, "inner": self.inner._llm_type}

    def _inner_runnable(self, kwargs: dict[str, Any]) -> Runnable[LanguageModelInput, BaseMessage]:
        tools = kwargs.pop("tools", None)
        if tools is not None:
            return self.inner.bind_tools(tools, **kwargs)
        return self.inner.bind(**kwargs) if kwargs else self.inner

    def _keep(self, request: dict[str, Any], key: str, answer: BaseMessage) -> AIMessage:
        if not isinstance(answer, AIMessage):
            raise ModelError(
                f"the model of agent {self.agent!r} answered with a {type(answer).__name__}, not an AIMessage"
            )
        RecordedExchange(
            agent=self.agent,
            key=key,
            request=request,
            answer=answer,
            model=_model_name(self.inner),
            path=_path(self.directory, key),
        ).write()
        return answer

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, key = self._request(messages, kwargs.get("tools"))
        recorded = self._recorded(key)
        if recorded is not None:
            return _result(recorded.answer)
        answer = self._inner_runnable(dict(kwargs)).invoke(messages, stop=stop)
        return _result(self._keep(request, key, answer))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, key = self._request(messages, kwargs.get("tools"))
        recorded = self._recorded(key)
        if recorded is not None:
            return _result(recorded.answer)
        answer = await self._inner_runnable(dict(kwargs)).ainvoke(messages, stop=stop)
        return _result(self._keep(request, key, answer))


class ReplayingChatModel(_CassetteModel):
    """Answers from the cassette ``directory`` only: no model, no network, no keys.

    The answer to a recorded request is the recorded :class:`AIMessage`, field for
    field. Construction fails with :class:`ModelError` when the directory does not
    exist.

    A request that was never recorded raises :class:`ModelError`::

        replay miss: agent 'payment' made a request that cassette examples/orders/cassettes
        does not hold (key 3c1f...; 21 recorded requests). The nearest recorded request
        (0b6f....json, agent 'payment', 97% alike) differs:
        --- recorded 0b6f....json
        +++ this request
        @@ -4 +4 @@
        -    {"amount_cents": 390, ...}
        +    {"amount_cents": 391, ...}
        If the change is intended, record the cassette again (--record).
    """

    def __init__(self, directory: str | Path, agent: str = "model", **kwargs: Any) -> None:
        path = Path(directory)
        if not path.is_dir():
            raise ModelError(f"no cassette at {path} for agent {agent!r}: record one first (--record {path})")
        super().__init__(directory=path, agent=agent, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "replaying-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "agent": self.agent}

    def _replay(self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec] | None) -> ChatResult:
        request, key = self._request(messages, tools)
        recorded = self._recorded(key)
        if recorded is None:
            raise ModelError(self._miss(request, key))
        return _result(recorded.answer)

    def _miss(self, request: dict[str, Any], key: str) -> str:
        exchanges = load_cassette(self.directory)
        head = (
            f"replay miss: agent {self.agent!r} made a request that cassette {self.directory} does not hold "
            f"(key {key[:12]}...; {len(exchanges)} recorded requests)."
        )
        if not exchanges:
            return f"{head} The cassette is empty: record it (--record {self.directory})."
        mine = _render(request)
        nearest, ratio = _nearest(mine, self.agent, exchanges)
        diff = list(
            difflib.unified_diff(
                _render(nearest.request), mine, f"recorded {nearest.path.name}", "this request", n=1, lineterm=""
            )
        )
        if len(diff) > _MAX_DIFF_LINES:
            diff = [*diff[:_MAX_DIFF_LINES], f"... ({len(diff) - _MAX_DIFF_LINES} more diff lines)"]
        return (
            f"{head} The nearest recorded request ({nearest.path.name}, agent {nearest.agent!r}, "
            f"{ratio:.0%} alike) differs:\n" + "\n".join(diff) + "\nIf the change is intended, record the "
            "cassette again (--record)."
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._replay(messages, kwargs.get("tools"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._replay(messages, kwargs.get("tools"))


# -- diagnostics --------------------------------------------------------------------------


def _render(request: dict[str, Any]) -> list[str]:
    """A normalised request as lines a person can diff: one tool or message line per
    item, a message's text continued on indented lines."""
    lines = [f"tool {t.get('name')}: {_canonical(t.get('parameters'))}" for t in request.get("tools", [])]
    for index, message in enumerate(request.get("messages", [])):
        content = message.get("content")
        text = content if isinstance(content, str) else _canonical(content)
        first, *rest = text.split("\n") if text else [""]
        lines.append(f"[{index}] {message.get('role')}: {first}")
        lines.extend(f"    {line}" for line in rest)
        for call in message.get("tool_calls", []):
            lines.append(f"    -> {call.get('name')}({_canonical(call.get('args'))}) id={call.get('id')}")
        if "tool_call_id" in message:
            lines.append(f"    (answers call {message['tool_call_id']})")
    return lines


def _nearest(mine: list[str], agent: str, exchanges: Sequence[RecordedExchange]) -> tuple[RecordedExchange, float]:
    """The recorded exchange most like ``mine`` (the same agent's first), with its similarity."""
    best: tuple[tuple[bool, float], RecordedExchange] | None = None
    for exchange in exchanges:
        ratio = difflib.SequenceMatcher(None, _render(exchange.request), mine, autojunk=False).ratio()
        rank = (exchange.agent == agent, ratio)
        if best is None or rank > best[0]:
            best = (rank, exchange)
    assert best is not None
    return best[1], best[0][1]


def _model_name(model: BaseChatModel) -> str | None:
    for attribute in ("model_name", "model"):
        value = getattr(model, attribute, None)
        if isinstance(value, str):
            return value
    return None
