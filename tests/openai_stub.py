"""An OpenAI-compatible chat-completions server for tests: a real client, a loopback port.

:class:`OpenAIStub` is a small Starlette app answering ``POST /v1/chat/completions``
the way a well-behaved tool-calling model would: it reads the latest task message
(:func:`agent_coordinator.core.task.parse_task`) and calls the tool it asks for with its arguments,
or answers in text when there is no task or the tool is not offered. Answers carry
``usage`` (tokens counted deterministically: words and punctuation of the request,
tools included, and of the answer), and every id is derived from the request, so
the same request always gets the same bytes back -- which is what lets a recorded
cassette be compared with a fresh recording.

Faults make it misbehave for robustness tests; each applies to requests whose task
asks for ``tool`` (any, by default):

* answer faults, on the first ``times`` answers of each conversation (counted from
  the assistant messages already in it): ``parallel_calls`` (the call twice in one
  answer), ``text_answer`` (prose, no call), ``wrong_types`` (numbers sent as
  ``{"value": n}``, lists and objects sent as JSON-encoded strings),
  ``hallucinated_tool`` (a call of ``lookup_customer``, which nobody offered);
* HTTP faults, on the first ``times`` attempts of each distinct request:
  ``rate_limited`` (429 with ``Retry-After: 0``), ``unavailable`` (503),
  ``unauthorized`` (401 quoting the bearer token it got, as a careless provider might),
  ``slow`` (no answer for ``slow_seconds`` or until the stub is released, so the
  client times out; then a 504 nobody reads).

Serve one on a free port with :func:`serve_stub`, or many behind one port with
:class:`StubServer`; uvicorn runs in a thread of its own, so the server outlives any
one event loop::

    with serve_stub(OpenAIStub(Fault("rate_limited", times=2))) as url:
        model = ChatOpenAI(base_url=url, api_key="test", model="stub", max_retries=0)

From a shell: ``python -m tests.openai_stub serve --port 8000`` (then
``OPENAI_BASE_URL=http://127.0.0.1:8000/v1``), or ``python -m tests.openai_stub
record examples/orders/cassettes`` to record the committed cassette again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent_coordinator.core.task import Task, parse_task

__all__ = [
    "ANSWER_FAULTS",
    "HALLUCINATED_TOOL",
    "HTTP_FAULTS",
    "Fault",
    "OpenAIStub",
    "StubCall",
    "StubServer",
    "serve_stub",
]

ANSWER_FAULTS = ("parallel_calls", "text_answer", "wrong_types", "hallucinated_tool")
HTTP_FAULTS = ("rate_limited", "unavailable", "unauthorized", "slow")
HALLUCINATED_TOOL = "lookup_customer"
CREATED = 1_700_000_000  # a fixed timestamp: answers must not depend on the clock
STARTUP_TIMEOUT_S = 10.0

_TOKENS = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Fault:
    """Misbehave in the way ``kind`` names, ``times`` times, for tasks calling ``tool`` (None: all)."""

    kind: str
    times: int = 1
    tool: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_FAULTS + HTTP_FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(ANSWER_FAULTS + HTTP_FAULTS)}")

    def applies(self, task: Task | None) -> bool:
        return self.tool is None or (task is not None and task.tool == self.tool)


@dataclass(frozen=True)
class StubCall:
    """One request the stub answered: the task's tool (if any), the HTTP status (0: held
    back by a ``slow`` fault, to a client that gives up), the fault applied (if any),
    and the ``Authorization`` header's bearer token."""

    tool: str | None
    status: int
    fault: str | None
    api_key: str | None


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a stand-in for a tokenizer, stable across runs."""
    return len(_TOKENS.findall(text))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _latest_task(messages: Sequence[dict[str, Any]]) -> Task | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            task = parse_task(_text(message.get("content")))
            if task is not None:
                return task
    return None


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return {"value": value}
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


class OpenAIStub:
    """The ASGI app (``.app``) and what it saw (``.calls``); see the module docstring."""

    def __init__(self, *faults: Fault, slow_seconds: float = 30.0) -> None:
        self.faults = faults
        self.slow_seconds = slow_seconds
        self.calls: list[StubCall] = []
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.answer, methods=["POST"])])

    def statuses(self) -> Counter[int]:
        """How many requests got each HTTP status."""
        with self._lock:
            return Counter(call.status for call in self.calls)

    def release(self) -> None:
        """Let every held-back (``slow``) answer go now; called when the server stops."""
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    def _log(self, call: StubCall) -> None:
        with self._lock:
            self.calls.append(call)

    async def answer(self, request: Request) -> JSONResponse:
        """Answer one ``POST /v1/chat/completions``."""
        if self._released is None:
            self._loop, self._released = asyncio.get_running_loop(), asyncio.Event()
        raw = await request.body()
        body = json.loads(raw)
        auth = request.headers.get("authorization", "")
        api_key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if body.get("stream"):
            return JSONResponse(
                {"error": {"message": "the stub does not stream", "type": "invalid_request_error"}}, 400
            )
        messages: list[dict[str, Any]] = body.get("messages") or []
        tools: list[dict[str, Any]] = body.get("tools") or []
        task = _latest_task(messages)
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            self._attempts[digest] += 1
            attempt = self._attempts[digest]
        tool = task.tool if task else None
        for fault in self.faults:
            if fault.kind in HTTP_FAULTS and fault.applies(task) and attempt <= fault.times:
                if fault.kind == "slow":
                    self._log(StubCall(tool, 0, fault.kind, api_key))
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._released.wait(), self.slow_seconds)
                    # By now the client has given up; the answer is for nobody.
                    return JSONResponse({"error": {"message": "held back", "type": "server_error"}}, 504)
                status, kind, text = {
                    "rate_limited": (429, "requests", "Rate limit reached; retry after 0s"),
                    "unavailable": (503, "server_error", "The server is overloaded"),
                    # The worst a provider does: quote the key it refused, in full.
                    "unauthorized": (401, "invalid_request_error", f"Incorrect API key provided: {api_key}"),
                }[fault.kind]
                self._log(StubCall(tool, status, fault.kind, api_key))
                return JSONResponse({"error": {"message": text, "type": kind}}, status, headers={"retry-after": "0"})
        answer_index = sum(1 for m in messages if m.get("role") == "assistant")
        applied = next(
            (f for f in self.faults if f.kind in ANSWER_FAULTS and f.applies(task) and answer_index < f.times), None
        )
        content, calls = self._answer(task, tools, applied.kind if applied else None)
        self._log(StubCall(tool, 200, applied.kind if applied else None, api_key))
        tool_calls: list[dict[str, Any]] = [
            {
                "id": f"call_{hashlib.sha256(f'{digest}/{i}'.encode()).hexdigest()[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args, sort_keys=True)},
            }
            for i, (name, args) in enumerate(calls)
        ]
        prompt = count_tokens(json.dumps(messages, sort_keys=True)) + count_tokens(json.dumps(tools, sort_keys=True))
        completion = count_tokens(content or "") + sum(
            count_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in tool_calls
        )
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return JSONResponse(
            {
                "id": f"chatcmpl-{digest[:24]}",
                "object": "chat.completion",
                "created": CREATED,
                "model": body.get("model", "stub"),
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )

    @staticmethod
    def _answer(
        task: Task | None, tools: Sequence[dict[str, Any]], fault: str | None
    ) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        """The answer's text and its tool calls."""
        offered = sorted(str(t.get("function", {}).get("name")) for t in tools)
        if task is None:
            return "I have no task: no message asks me to call a tool.", []
        if task.tool not in offered:
            return f"I cannot do this: `{task.tool}` is not one of my tools ({', '.join(offered) or 'none'}).", []
        arguments = dict(task.arguments)
        if fault == "parallel_calls":
            return None, [(task.tool, arguments), (task.tool, dict(arguments))]
        if fault == "text_answer":
            return f"Sure! I have taken care of it, no need to call `{task.tool}`.", []
        if fault == "wrong_types":
            return None, [(task.tool, {key: _wrong_type(value) for key, value in arguments.items()})]
        if fault == "hallucinated_tool":
            return None, [(HALLUCINATED_TOOL, {"order_id": arguments.get("order_id", "")})]
        return None, [(task.tool, arguments)]


class _Server(uvicorn.Server):
    """uvicorn, telling a waiting thread its address once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.url = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{host}:{port}"
        self.ready.set()


class StubServer:
    """One uvicorn server on loopback for many stubs: each is mounted under a prefix of
    its own (``http://HOST:PORT/<n>/v1``), so tests with different faults share the
    server (starting one is cheap; stopping one takes uvicorn ~0.2 s)."""

    def __init__(self) -> None:
        self._stubs: dict[str, OpenAIStub] = {}
        self._count = 0
        self._server: _Server | None = None
        self.app = Starlette(routes=[Route("/{stub}/v1/chat/completions", self._dispatch, methods=["POST"])])

    async def _dispatch(self, request: Request) -> JSONResponse:
        stub = self._stubs.get(request.path_params["stub"])
        if stub is None:
            return JSONResponse({"error": {"message": "no such stub", "type": "invalid_request_error"}}, 404)
        return await stub.answer(request)

    @classmethod
    @contextmanager
    def running(cls, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[StubServer]:
        """Serve on ``host:port`` (0: a free port) in a thread of its own until exit."""
        server = cls()
        config = uvicorn.Config(server.app, host=host, port=port, lifespan="off", access_log=False, log_config=None)
        server._server = _Server(config)
        thread = threading.Thread(target=server._server.run, name="openai-stub", daemon=True)
        thread.start()
        try:
            if not server._server.ready.wait(STARTUP_TIMEOUT_S) or not server._server.url:
                raise RuntimeError(f"the OpenAI stub did not start listening on {host}:{port}")
            yield server
        finally:
            for stub in list(server._stubs.values()):
                stub.release()
            server._server.should_exit = True
            thread.join(STARTUP_TIMEOUT_S)

    @contextmanager
    def serving(self, stub: OpenAIStub) -> Iterator[str]:
        """Mount ``stub`` and yield its base URL (``http://HOST:PORT/<n>/v1``, what
        ``ChatOpenAI(base_url=...)`` and ``OPENAI_BASE_URL`` take); unmount it on exit,
        releasing its held-back answers."""
        assert self._server is not None, "use StubServer.running()"
        self._count += 1
        name = str(self._count)
        self._stubs[name] = stub
        try:
            yield f"{self._server.url}/{name}/v1"
        finally:
            stub.release()
            del self._stubs[name]


@contextmanager
def serve_stub(stub: OpenAIStub, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``stub`` alone on ``host:port`` (0: a free port); yields its base URL."""
    with StubServer.running(host=host, port=port) as server, server.serving(stub) as url:
        yield url


# -- from a shell ---------------------------------------------------------------------------


async def record_example_cassette(directory: str) -> None:
    """Run the example orders against a fresh stub with every request recorded in ``directory``."""
    import httpx
    from langchain_openai import ChatOpenAI

    from tests.e2e.test_orders_e2e import EXPECTED
    from tests.e2e.test_real_models import run_example_orders

    with serve_stub(OpenAIStub()) as url:
        async with httpx.AsyncClient() as http:
            model = ChatOpenAI(base_url=url, api_key="test", model="stub", max_retries=0, http_async_client=http)
            results, _ = await run_example_orders("orchestration", model, record=directory)
    statuses = {r.workflow_id: r.status for r in results}
    if statuses != EXPECTED:
        raise SystemExit(f"the recorded run did not end as expected: {statuses}")
    print(f"recorded {sum(r.usage.model_calls for r in results)} model calls in {directory}")


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a developer's tool
    parser = argparse.ArgumentParser(prog="python -m tests.openai_stub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the well-behaved stub until interrupted")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    record = commands.add_parser("record", help="record the example orders' cassette")
    record.add_argument("directory")
    args = parser.parse_args(argv)
    if args.command == "serve":
        uvicorn.run(OpenAIStub().app, host=args.host, port=args.port, access_log=False)
    else:
        asyncio.run(record_example_cassette(args.directory))


if __name__ == "__main__":  # pragma: no cover
    main()
