"""Serving a :class:`~agent_coordinator.examples.orders.sandbox.app.Sandbox` over real HTTP, for other processes.

``python -m agent_coordinator.examples.orders.sandbox --port 8700 --store sandbox.db`` (or :func:`serve`) runs
the sandbox's ASGI app with uvicorn on one event loop in one process. Clients call
``http://HOST:PORT/inventory/...``, ``/payment/...``, ``/shipping/...`` -- the order
tools via ``order_tools(client=httpx.AsyncClient(), urls=ServiceUrls.at(url))`` --
and read its state with :class:`~agent_coordinator.examples.orders.sandbox.remote.RemoteSandboxState`.

When it accepts connections it prints one line to stdout, which a supervisor or a
test waits for (``port=0`` picks a free port; the line names the real one)::

    sandbox listening on http://127.0.0.1:8700 (store: /tmp/sandbox.db)

With ``store`` the state survives the process (even SIGKILL): a server restarted on
the same file answers every stored idempotent reply again. Without it the state
lives and dies with the process (``(store: none)``).
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from agent_coordinator.examples.orders.sandbox.app import Sandbox
from agent_coordinator.examples.orders.sandbox.scenario import Scenario

__all__ = ["READY_PREFIX", "serve", "serve_services"]

#: The start of the line printed once the server accepts connections.
READY_PREFIX = "sandbox listening on "


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived; uvicorn has shut down gracefully and re-raised it."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


class _Server(uvicorn.Server):
    """A uvicorn server that reports its address once it is listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            self._on_ready(f"http://{host}:{port}")


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    store: str | Path | None = None,
    scenario: Scenario | None = None,
) -> None:
    """Serve a sandbox at ``http://host:port`` until SIGINT or SIGTERM, then shut down
    gracefully, close the store and return.

    ``store``/``scenario`` are :class:`~agent_coordinator.examples.orders.sandbox.app.Sandbox`'s (an existing
    store keeps its scenario; a different one raises
    :class:`~agent_coordinator.core.errors.InvalidInput`). ``port=0`` picks a free port. Prints
    ``sandbox listening on http://HOST:PORT (store: FILE|none)`` when ready.
    """
    sandbox = Sandbox(scenario, store=store)
    described = str(sandbox.store_path) if sandbox.store_path is not None else "none"

    def ready(url: str) -> None:
        print(f"{READY_PREFIX}{url} (store: {described})", flush=True)

    config = uvicorn.Config(sandbox.app, host=host, port=port, lifespan="off", access_log=False, log_level="warning")
    # uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal to the handlers it
    # found; ours turn that into a normal return (the default would kill the process
    # before the store is closed).
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        _Server(config, on_ready=ready).run()
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.close()


def serve_services(*, host: str, port: int, store: Path | None, scenario: Path | None) -> None:
    """The order app's services hook (``WorkflowApp.services``, ``coordinator
    sandbox``): :func:`serve` with the scenario read from ``scenario``, a JSON file."""
    serve(host=host, port=port, store=store, scenario=Scenario.from_file(scenario) if scenario else None)
