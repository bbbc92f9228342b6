"""Deterministic fake chat models that are real LangChain chat models.

A :class:`ScriptedChatModel` answers through a *policy*: a plain function of the
conversation and the bound tools that returns the model's :class:`AIMessage`.
Nothing is random and nothing is remembered between calls, so one model can serve
many workflows concurrently and every answer is a pure function of its input::

    model = fake_model()                                 # follows the task message
    model = fake_model(misbehave("unknown_tool"))        # first answer bad, then good
    model = fake_model(scripted(AIMessage("thinking"), then=follow_task))

The model adds the bookkeeping a provider would: tool call ids (``call_<n>`` where
``n`` is 1 + the number of AI messages already in the conversation; ``call_<n>_<i>``
for the ``i``-th extra call of a parallel answer), a message id derived from the
conversation and the answer, ``usage_metadata`` estimated from the text (chars // 4 + 1)
and ``response_metadata["model_name"]``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    InvalidToolCall,
    ToolCall,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from agent_coordinator.core.task import Task, parse_task

__all__ = [
    "BOGUS_FIELD",
    "FAULTS",
    "UNKNOWN_TOOL",
    "Policy",
    "ScriptedChatModel",
    "ScriptedMessageChunk",
    "fake_model",
    "follow_task",
    "misbehave",
    "scripted",
]

ToolSpec = dict[str, Any]
"""A bound tool in OpenAI tool format: ``{"type": "function", "function": {"name", "parameters", ...}}``."""

Policy = Callable[[Sequence[BaseMessage], Sequence[ToolSpec]], AIMessage]
"""Given the conversation and the bound tools, the model's answer."""

FAULTS: tuple[str, ...] = ("unknown_tool", "invalid_arguments", "wrong_value", "no_tool_call", "parallel_calls")
"""The ways :func:`misbehave` can get an answer wrong."""

UNKNOWN_TOOL = "delete_database"
"""The tool name a ``"unknown_tool"`` answer calls (suffixed if it happens to be bound)."""

BOGUS_FIELD = "bogus_field"
"""The argument an ``"invalid_arguments"`` answer adds."""

_WORDS = re.compile(r"\S+\s*|\s+")


# --------------------------------------------------------------------------- helpers


def _answer_index(messages: Sequence[BaseMessage]) -> int:
    """How many answers the model already gave in this conversation."""
    return sum(1 for message in messages if isinstance(message, AIMessage))


def _call_id(n: int, index: int) -> str:
    return f"call_{n}" if index == 0 else f"call_{n}_{index}"


def _tool_name(spec: ToolSpec) -> str | None:
    function = spec.get("function", spec)
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _tool_spec(tools: Sequence[ToolSpec], name: str) -> ToolSpec | None:
    for spec in tools:
        if _tool_name(spec) == name:
            return spec
    return None


def _required(spec: ToolSpec | None) -> list[str]:
    if spec is None:
        return []
    function = spec.get("function", spec)
    parameters = function.get("parameters", {}) if isinstance(function, dict) else {}
    required = parameters.get("required", []) if isinstance(parameters, dict) else []
    return [field for field in required if isinstance(field, str)]


def _latest_task(messages: Sequence[BaseMessage]) -> Task | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            task = parse_task(message.text)
            if task is not None:
                return task
    return None


_NOT_FORCING: frozenset[str] = frozenset({"auto", "none"})
_FORCING_ANY: frozenset[str] = frozenset({"any", "required"})


def _forced_tool(tool_choice: object, tools: Sequence[ToolSpec]) -> str | None:
    """The tool ``tool_choice`` forces a call of, if it forces one tool.

    A tool name, ``{"type": "function", "function": {"name": ...}}`` (OpenAI) or
    ``{"name": ...}`` names one; ``"any"``, ``"required"`` and ``True`` force one only
    when exactly one tool is bound (with several, which one is a model's choice,
    and a scripted model has none to make); ``"auto"``, ``"none"``, ``False`` and
    ``None`` force nothing.
    """
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or (isinstance(tool_choice, str) and tool_choice in _FORCING_ANY):
        names = [name for spec in tools if (name := _tool_name(spec))]
        return names[0] if len(names) == 1 else None
    if isinstance(tool_choice, str):
        return None if tool_choice in _NOT_FORCING else tool_choice
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function", tool_choice)
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) else None
    return None


def _forced_call(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec], name: str) -> AIMessage:
    """The answer to a ``tool_choice`` forcing ``name`` with no task to follow: a call
    with no arguments.

    Raises:
        ValueError: ``name`` is not bound, or it has required arguments (a scripted
            model has no values for them).
    """
    spec = _tool_spec(tools, name)
    if spec is None:
        bound = ", ".join(sorted(n for s in tools if (n := _tool_name(s)))) or "none"
        raise ValueError(f"tool_choice forces a call of {name!r}, which is not bound (bound tools: {bound})")
    required = _required(spec)
    if required:
        raise ValueError(
            f"tool_choice forces a call of {name!r}, whose required arguments ({', '.join(required)}) a scripted"
            " model cannot invent: give the conversation a task message (agents.task.render_task) naming them,"
            " or script the answer with scripted(AIMessage(..., tool_calls=[...]))"
        )
    return _calls(messages, (name, {}))


def _calls(messages: Sequence[BaseMessage], *calls: tuple[str, dict[str, Any]]) -> AIMessage:
    """An answer consisting of ``calls``, with the conversation's deterministic ids."""
    n = _answer_index(messages) + 1
    return AIMessage(
        content="",
        tool_calls=[tool_call(name=name, args=args, id=_call_id(n, i)) for i, (name, args) in enumerate(calls)],
    )


def _with_call_ids(answer: AIMessage, messages: Sequence[BaseMessage]) -> AIMessage:
    """``answer`` with an id on every tool call that lacks one (a copy if any was missing)."""
    if all(call.get("id") for call in answer.tool_calls):
        return answer
    n = _answer_index(messages) + 1
    calls = [
        tool_call(name=call["name"], args=call["args"], id=call.get("id") or _call_id(n, i))
        for i, call in enumerate(answer.tool_calls)
    ]
    return answer.model_copy(update={"tool_calls": calls})


def _estimate_tokens(text_length: int) -> int:
    return text_length // 4 + 1


def _calls_text(calls: Sequence[ToolCall]) -> str:
    return json.dumps([[call["name"], call["args"]] for call in calls], sort_keys=True, default=str)


def _message_text_length(message: BaseMessage) -> int:
    length = len(message.text)
    if isinstance(message, AIMessage) and message.tool_calls:
        length += len(_calls_text(message.tool_calls))
    return length


def _fingerprint(message: BaseMessage) -> list[Any]:
    """What identifies a message's meaning (never its id, which may be random)."""
    fingerprint: list[Any] = [message.type, message.content]
    if isinstance(message, AIMessage):
        fingerprint.append([[call["name"], call["args"], call.get("id")] for call in message.tool_calls])
    if isinstance(message, ToolMessage):
        fingerprint.append(message.tool_call_id)
    return fingerprint


def _message_id(messages: Sequence[BaseMessage], answer: AIMessage) -> str:
    payload = json.dumps([[_fingerprint(m) for m in messages], _fingerprint(answer)], sort_keys=True, default=str)
    return "msg_" + hashlib.sha256(payload.encode()).hexdigest()[:24]


def _name(policy: Callable[..., Any], name: str) -> None:
    policy.__name__ = policy.__qualname__ = name


def _policy_name(policy: Callable[..., Any]) -> str:
    return str(getattr(policy, "__qualname__", None) or repr(policy))


# --------------------------------------------------------------------------- policies


def follow_task(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]) -> AIMessage:
    """The well-behaved policy: do what the latest task message asks.

    Finds the most recent :class:`HumanMessage` that :func:`~agent_coordinator.core.task.parse_task`
    understands and answers with exactly one call of its tool with its arguments,
    ignoring any earlier answers and tool results (so a re-ask after a bad answer is
    answered correctly). With no task message, or when the task's tool is not among
    ``tools``, the answer is plain text saying so, without a tool call.
    """
    task = _latest_task(messages)
    if task is None:
        return AIMessage(content="I have no task: no message asks me to call a tool.")
    if _tool_spec(tools, task.tool) is None:
        available = ", ".join(sorted(name for spec in tools if (name := _tool_name(spec)))) or "none"
        return AIMessage(
            content=f"I cannot do this step: `{task.tool}` is not one of my tools (my tools: {available})."
        )
    return _calls(messages, (task.tool, dict(task.arguments)))


def scripted(*answers: AIMessage | Policy, then: Policy = follow_task) -> Policy:
    """A policy that gives ``answers`` in order within each conversation, then defers to ``then``.

    The k-th answer of a conversation (k = number of AI messages already in it) is
    ``answers[k]`` while there is one — an :class:`AIMessage` as given (tool calls
    without an id get the conversation's deterministic ids) or a policy's answer —
    and ``then(messages, tools)`` afterwards. The position comes from the messages,
    not from a counter, so conversations that share a model never disturb each other.
    """

    def policy(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]) -> AIMessage:
        k = _answer_index(messages)
        if k >= len(answers):
            return then(messages, tools)
        entry = answers[k]
        answer = entry if isinstance(entry, AIMessage) else entry(messages, tools)
        return _with_call_ids(answer, messages)

    _name(policy, f"scripted({len(answers)} answers, then={_policy_name(then)})")
    return policy


def _bad_answer(fault: str, task: Task, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]) -> AIMessage:
    arguments = dict(task.arguments)
    if fault == "unknown_tool":
        bound = {_tool_name(spec) for spec in tools}
        name = UNKNOWN_TOOL
        while name in bound:
            name += "_"
        return _calls(messages, (name, arguments))
    if fault == "invalid_arguments":
        present = [field for field in _required(_tool_spec(tools, task.tool)) if field in arguments] or list(arguments)
        if present:
            del arguments[present[0]]
        arguments[BOGUS_FIELD] = "not in the schema"
        return _calls(messages, (task.tool, arguments))
    if fault == "wrong_value":
        numeric = [k for k, v in arguments.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        if numeric:
            for key in numeric:
                arguments[key] += 1
        else:
            strings = [k for k, v in arguments.items() if isinstance(v, str)]
            arguments[(strings or list(arguments) or ["value"])[0]] = "WRONG"
        return _calls(messages, (task.tool, arguments))
    if fault == "no_tool_call":
        return AIMessage(content=f"Done. I have taken care of it; there is no need to call `{task.tool}`.")
    # parallel_calls
    return _calls(messages, (task.tool, arguments), (task.tool, dict(arguments)))


def misbehave(fault: str, *, times: int = 1, when: Callable[[Task], bool] | None = None) -> Policy:
    """A policy whose first ``times`` answers of each conversation are wrong in the way ``fault`` names.

    Applies to conversations with a task message matching ``when`` (default: all);
    the answer index counts the AI messages already in the conversation, so after
    ``times`` bad answers (or for any other conversation) it answers as
    :func:`follow_task`. The faults:

    * ``"unknown_tool"`` — calls ``delete_database`` (a tool that is not bound) with the task's arguments.
    * ``"invalid_arguments"`` — the right tool, but a required argument dropped and ``bogus_field`` added.
    * ``"wrong_value"`` — the right tool, every numeric argument + 1; with none, the first string
      argument (else the first argument; with no arguments, a new ``value``) set to ``"WRONG"``.
    * ``"no_tool_call"`` — a text answer claiming the work is done, without a tool call.
    * ``"parallel_calls"`` — two calls of the right tool with the right arguments in one answer.

    Raises:
        ValueError: ``fault`` is not one of :data:`FAULTS` (the message lists them), or ``times < 0``.
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; valid faults: {', '.join(FAULTS)}")
    if times < 0:
        raise ValueError(f"times must be >= 0, got {times}")

    def policy(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]) -> AIMessage:
        task = _latest_task(messages)
        if task is None or _answer_index(messages) >= times or (when is not None and not when(task)):
            return follow_task(messages, tools)
        return _bad_answer(fault, task, messages, tools)

    _name(policy, f"misbehave({fault!r}, times={times})")
    return policy


# --------------------------------------------------------------------------- the model


class ScriptedChatModel(BaseChatModel):
    """A chat model whose answers come from ``policy``; deterministic, cheap, and concurrency-safe.

    ``bind_tools`` converts the tools to OpenAI format and the policy receives them.
    Every answer is a fresh :class:`AIMessage` with tool call ids filled in, a message
    id derived from the conversation and the answer, ``usage_metadata`` (estimated
    from the text) and ``response_metadata["model_name"]``. ``invoke``/``ainvoke``
    and ``stream``/``astream`` give the same message: the streamed chunks add up to
    the invoked answer (content, tool calls, invalid tool calls, usage, id). Streaming
    splits the text into words and each tool call's arguments into two
    ``tool_call_chunks``, in :class:`ScriptedMessageChunk` pieces, which keep invalid
    calls invalid when added up (and may be added with ``sum(chunks)``).

    ``tool_choice`` (given to :meth:`bind_tools` or at invocation) forces a call only
    where the policy has nothing to follow: when the conversation has no task message
    and the policy answered without a tool call, a ``tool_choice`` naming a tool (or
    ``"any"``/``"required"`` with exactly one tool bound) makes the answer a call of
    that tool with no arguments -- what LangChain's standard tests ask of a model told
    to call a tool that takes none. With a task message, the task decides.
    """

    policy: Policy = follow_task
    """Decides the answer; see :func:`follow_task`, :func:`scripted`, :func:`misbehave`."""
    model_name: str = "scripted"
    """Reported in ``response_metadata["model_name"]`` and in tracing."""

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "policy": _policy_name(self.policy)}

    def bind_tools(
        self,
        tools: Sequence[ToolSpec | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` (converted with ``convert_to_openai_tool``) so the policy sees them.

        ``tool_choice`` is recorded in the invocation parameters when given; it never
        changes the policy's answer to a task, and forces a call only when there is no
        task to follow (see the class docstring).
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _answer(self, messages: Sequence[BaseMessage], options: dict[str, Any]) -> AIMessage:
        """Ask the policy, apply a forcing ``tool_choice``, then add what a provider adds
        (ids, usage, metadata) to a fresh message. ``options`` are the invocation's
        keyword arguments (``tools``, ``tool_choice``, ...)."""
        tools: Sequence[ToolSpec] = options.get("tools") or []
        answer = self.policy(messages, tools)
        if not isinstance(answer, AIMessage):
            raise TypeError(f"policy {_policy_name(self.policy)} returned {type(answer).__name__}, not an AIMessage")
        forced = _forced_tool(options.get("tool_choice"), tools)
        if (
            forced is not None
            and not (answer.tool_calls or answer.invalid_tool_calls)
            and _latest_task(messages) is None
        ):
            answer = _forced_call(messages, tools, forced)
        answer = _with_call_ids(answer, messages)
        usage = answer.usage_metadata
        if usage is None:
            input_tokens = _estimate_tokens(sum(_message_text_length(m) for m in messages))
            output_tokens = _estimate_tokens(_message_text_length(answer))
            usage = UsageMetadata(
                input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
            )
        content = answer.content if isinstance(answer.content, str) else copy.deepcopy(answer.content)
        return AIMessage(
            content=content,
            tool_calls=copy.deepcopy(answer.tool_calls),
            invalid_tool_calls=copy.deepcopy(answer.invalid_tool_calls),
            additional_kwargs=copy.deepcopy(answer.additional_kwargs),
            response_metadata={**answer.response_metadata, "model_name": self.model_name},
            usage_metadata=usage,
            name=answer.name,
            id=answer.id or _message_id(messages, answer),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from _chunks(self._answer(messages, kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in _chunks(self._answer(messages, kwargs)):
            yield chunk


class ScriptedMessageChunk(AIMessageChunk):
    """A streamed piece of a scripted answer; its invalid tool calls stay invalid when added up.

    LangChain adds chunks by concatenating each tool call's argument text and then
    decides again, by *partial* JSON parsing, which calls are valid: a call whose
    arguments were cut short (``{"sku": "SKU-1", "quan``) comes back as a valid call
    with partial arguments, and every invalid call loses its ``error``. These chunks
    carry the answer's invalid calls (by tool call chunk index) and put them back,
    exactly, in every sum they take part in: on either side of ``+`` (Python asks a
    subclass's ``__radd__`` first), as the first operand of a list sum (LangChain's
    ``merge_chat_generation_chunks``) and from ``sum(chunks)``'s initial 0. A sum
    that includes the stream's last chunk is a plain :class:`AIMessageChunk` with the
    calls set explicitly, so ``message_chunk_to_message`` (how LangChain's ``invoke``
    ends a streamed call) gives an :class:`AIMessage`, not a chunk.
    """

    _invalid_calls: dict[int, InvalidToolCall] = PrivateAttr(default_factory=dict)

    def __add__(self, other: Any) -> BaseMessageChunk:  # type: ignore[override]  # the base overloads narrow it
        if isinstance(other, AIMessageChunk):
            return _add_keeping_invalid_calls(self, other)
        if isinstance(other, list | tuple) and all(isinstance(o, AIMessageChunk) for o in other):
            return _add_keeping_invalid_calls(self, *other)
        result: BaseMessageChunk = super().__add__(other)
        return result

    def __radd__(self, other: Any) -> BaseMessageChunk:
        if isinstance(other, AIMessageChunk):
            return _add_keeping_invalid_calls(other, self)
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # sum(chunks) starts from 0
        return NotImplemented


def _add_keeping_invalid_calls(left: AIMessageChunk, *others: AIMessageChunk) -> AIMessageChunk:
    """``left + others`` as LangChain adds them, with the invalid calls that any
    :class:`ScriptedMessageChunk` among them carries put back in place of what partial
    parsing made of their argument text."""
    merged = add_ai_message_chunks(left, *others)
    invalid: dict[int, InvalidToolCall] = {}
    for chunk in (left, *others):
        if isinstance(chunk, ScriptedMessageChunk):
            invalid.update(chunk._invalid_calls)
    tool_calls: list[ToolCall] = []
    invalid_calls: list[InvalidToolCall] = []
    for piece in merged.tool_call_chunks:
        index = piece.get("index")
        if index is not None and index in invalid:
            invalid_calls.append(copy.deepcopy(invalid[index]))
        else:  # what LangChain makes of this one call on its own
            alone = AIMessageChunk(content="", tool_call_chunks=[piece])
            tool_calls.extend(alone.tool_calls)
            invalid_calls.extend(alone.invalid_tool_calls)
    fields: dict[str, Any] = {
        "content": merged.content,
        "additional_kwargs": merged.additional_kwargs,
        "response_metadata": merged.response_metadata,
        "usage_metadata": merged.usage_metadata,
        "id": merged.id,
        "chunk_position": merged.chunk_position,
    }
    if merged.chunk_position == "last":
        # Given calls and no chunks, AIMessageChunk keeps the calls as they are.
        return AIMessageChunk(**fields, tool_calls=tool_calls, invalid_tool_calls=invalid_calls)
    result = ScriptedMessageChunk(**fields, tool_call_chunks=merged.tool_call_chunks)
    result.tool_calls = tool_calls
    result.invalid_tool_calls = invalid_calls
    result._invalid_calls = invalid
    return result


def _chunks(message: AIMessage) -> list[ChatGenerationChunk]:
    """``message`` as stream chunks that add up to it again.

    Text content word by word; each tool call as two ``tool_call_chunks`` (name and
    id with the first half of its JSON arguments, then the rest), invalid calls after
    the valid ones with their argument text as given; a last chunk with
    ``chunk_position="last"`` carrying usage and metadata, which must appear once
    since chunk aggregation sums and concatenates them. Every chunk is a
    :class:`ScriptedMessageChunk` carrying the message's invalid calls, so that adding
    up keeps them invalid, and ``sum(chunks)`` works (see there).
    """
    chunk_type = ScriptedMessageChunk
    pieces: list[ScriptedMessageChunk] = []
    if isinstance(message.content, str):
        pieces.extend(chunk_type(content=word, id=message.id) for word in _WORDS.findall(message.content))
    elif message.content:
        pieces.append(chunk_type(content=copy.deepcopy(message.content), id=message.id))
    raw: list[tuple[str | None, str, str | None]] = [
        (call["name"], json.dumps(call["args"]), call["id"]) for call in message.tool_calls
    ]
    raw += [(call["name"], call["args"] or "", call["id"]) for call in message.invalid_tool_calls]
    for index, (name, args, call_id) in enumerate(raw):
        half = len(args) // 2
        pieces.append(
            chunk_type(
                content="",
                id=message.id,
                tool_call_chunks=[tool_call_chunk(name=name, args=args[:half], id=call_id, index=index)],
            )
        )
        pieces.append(
            chunk_type(content="", id=message.id, tool_call_chunks=[tool_call_chunk(args=args[half:], index=index)])
        )
    pieces.append(
        chunk_type(
            content="" if isinstance(message.content, str) else [],
            id=message.id,
            additional_kwargs=message.additional_kwargs,
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
            chunk_position="last",
        )
    )
    if message.invalid_tool_calls:
        first_invalid = len(message.tool_calls)
        invalid = {first_invalid + i: call for i, call in enumerate(message.invalid_tool_calls)}
        for piece in pieces:
            piece._invalid_calls = invalid
    return [ChatGenerationChunk(message=piece) for piece in pieces]


def fake_model(policy: Policy | None = None) -> ScriptedChatModel:
    """A :class:`ScriptedChatModel` answering with ``policy`` (default :func:`follow_task`)."""
    return ScriptedChatModel() if policy is None else ScriptedChatModel(policy=policy)
