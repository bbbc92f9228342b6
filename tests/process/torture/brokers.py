"""Broker instances of the harness's own, to restart at will.

A choreography run talks to a NATS server or a RabbitMQ node that the harness
starts on free ports with a data directory under the run's work directory, so a
broker restart (SIGKILL, a seeded outage, the same port and data again) hurts
nobody else. The machine's own brokers (4222, 5672) are never touched.

* NATS: ``nats-server -a 127.0.0.1 -p PORT -js -sd DIR``;
* RabbitMQ: a second node of the installed server (``rabbitmq-server`` from
  ``/usr/lib/rabbitmq/bin``, run directly so it keeps the harness's user), with its
  own node name, AMQP and distribution ports, mnesia and log directories, config
  file (the machine's ``/etc/rabbitmq/rabbitmq.conf`` pins 5672), plugins file
  (none: no management listener), environment file and ``HOME`` (Erlang cookie).
  It registers with the machine's ``epmd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from tests.process.torture.processes import POLL_S, HarnessError

__all__ = ["Broker", "NatsServer", "RabbitNode", "broker_for", "broker_missing", "free_port"]

START_TIMEOUT_S = 90.0
RABBITMQ_SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/lib/rabbitmq/sbin/rabbitmq-server")


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Broker(Protocol):
    """A broker the harness owns: start it, kill it, start it again on the same port and data."""

    name: str
    restarts: int

    @property
    def bus_url(self) -> str:
        """The ``--bus`` URL of the coordinator processes."""
        ...

    async def start(self) -> None: ...

    async def kill(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Instance:
    """One broker process group, its output in numbered files under ``directory``."""

    directory: Path
    port: int = field(default_factory=free_port)
    restarts: int = 0
    _proc: asyncio.subprocess.Process | None = None
    _starts: int = 0

    async def _spawn(self, argv: list[str], env: dict[str, str], ready_line: str) -> None:
        if self._proc is not None and self._proc.returncode is None:
            raise HarnessError("the broker is already running")
        self._starts += 1
        log = self.directory / f"broker-{self._starts}.log"
        with log.open("wb") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.directory,
                start_new_session=True,  # its own process group: the kill takes its children too
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (ready_line in log.read_text(errors="replace") and _accepts(self.port)):
            if self._proc.returncode is not None:
                raise HarnessError(
                    f"{argv[0]} exited {self._proc.returncode}: {log.read_text(errors='replace')[-3000:]}"
                )
            if time.monotonic() > deadline:
                await self.kill()
                raise HarnessError(f"{argv[0]} not ready within {START_TIMEOUT_S:g}s; see {log}")
            await asyncio.sleep(POLL_S * 4)  # polling a condition, bounded by the deadline

    async def kill(self) -> None:
        """SIGKILL the broker's process group and wait for it."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        # Children outside the group (erl_child_setup has a session of its own) exit
        # when the VM does; the port is free once nothing accepts on it.
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if not _accepts(self.port):
                return
            await asyncio.sleep(POLL_S * 4)  # polling a condition, bounded by the deadline

    async def close(self) -> None:
        await self.kill()


@dataclass
class NatsServer(_Instance):
    """``nats-server`` with JetStream on a free port, its store under ``directory``."""

    name: str = "nats"

    @property
    def bus_url(self) -> str:
        # A killed worker's unacknowledged events come back after ack_wait: keep it short.
        return f"nats://127.0.0.1:{self.port}?" + urlencode(
            {"stream": "TORTURE", "subject_prefix": "torture", "ack_wait": "2"}
        )

    async def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise HarnessError("nats-server is not on PATH; install it (apt-get install nats-server)")
        store = self.directory / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        await self._spawn(argv, dict(os.environ), "Server is ready")


#: RabbitMQ keeps which quorum queues it hosts (Ra's ``names`` table) in a file it
#: saves every three minutes. A node SIGKILLed before that, after a queue was first
#: declared, comes back with the queue but without its Ra member: "leader not known",
#: every consume times out, for good (RabbitMQ 3.10; seen in this harness). That is
#: the broker losing a queue, which no client can repair; so a young node is stopped
#: with SIGTERM (a clean stop), and SIGKILLed only once its queues are on disk.
RA_NAMES_SAVED_AFTER_S = 200.0


@dataclass
class RabbitNode(_Instance):
    """A RabbitMQ node of its own: ports, node name, mnesia, logs, config and cookie."""

    name: str = "rabbitmq"
    dist_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: f"torture-{uuid.uuid4().hex[:8]}@localhost")
    first_started: float | None = None
    graceful_stops: int = 0

    async def kill(self) -> None:
        """SIGKILL the node -- or, while it is younger than
        :data:`RA_NAMES_SAVED_AFTER_S`, stop it with SIGTERM (see there)."""
        proc = self._proc
        young = self.first_started is not None and time.monotonic() - self.first_started < RA_NAMES_SAVED_AFTER_S
        if proc is not None and proc.returncode is None and young:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=60.0)
            self.graceful_stops += 1
        await super().kill()  # SIGKILL whatever is left, and wait until the port is free

    @property
    def bus_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/?" + urlencode(
            {"exchange": "torture", "queue_prefix": "torture."}
        )

    async def start(self) -> None:
        server = rabbitmq_server()
        if server is None:
            raise HarnessError(
                f"no rabbitmq-server script among {', '.join(RABBITMQ_SERVER_CANDIDATES)}; install RabbitMQ "
                "(apt-get install rabbitmq-server) or set TORTURE_RABBITMQ_SERVER"
            )
        home = self.directory
        for sub in ("mnesia", "log"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n", encoding="utf-8"
        )
        (home / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        (home / "rabbitmq-env.conf").write_text("", encoding="utf-8")  # not the machine's (it names the node)
        env = {
            **os.environ,
            "HOME": str(home),  # the Erlang cookie of this node and nobody else's
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        await self._spawn([server], env, "Server startup complete")
        if self.first_started is None:
            self.first_started = time.monotonic()


def rabbitmq_server() -> str | None:
    """The rabbitmq-server start script itself (not /usr/sbin's wrapper, which switches user)."""
    explicit = os.environ.get("TORTURE_RABBITMQ_SERVER")
    candidates = (explicit,) if explicit else RABBITMQ_SERVER_CANDIDATES
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def broker_missing(name: str) -> str | None:
    """Why a broker of kind ``name`` cannot be started here (None when it can)."""
    if name == "nats" and shutil.which("nats-server") is None:
        return "nats-server is not on PATH"
    if name == "rabbitmq" and rabbitmq_server() is None:
        return f"no rabbitmq-server script among {', '.join(RABBITMQ_SERVER_CANDIDATES)}"
    if name == "rabbitmq" and shutil.which("erl") is None:
        return "Erlang (erl) is not on PATH"
    return None


def broker_for(name: str, directory: Path) -> NatsServer | RabbitNode:
    directory.mkdir(parents=True, exist_ok=True)
    if name == "nats":
        return NatsServer(directory)
    if name == "rabbitmq":
        return RabbitNode(directory)
    raise HarnessError(f"unknown broker {name!r}; choose nats or rabbitmq")
