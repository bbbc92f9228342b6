"""The processes a torture run starts: `coordinator` commands and the served sandbox.

Every `coordinator` process is the console script installed next to this
interpreter (``Path(sys.executable).parent / "coordinator"``), so the harness drives
the product exactly as a user's shell would, whatever its module layout. Each
incarnation writes its stdout and stderr to files of its own under the run's log
directory (``NNN-role.out`` / ``.err``), kept for a post-mortem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HarnessError",
    "Process",
    "ProcessStarter",
    "Sandbox",
    "coordinator_executable",
    "served_sandbox",
    "wait_for",
]

READY = re.compile(r"sandbox listening on (http://\S+) \(store: (.+)\)")
#: How often a wait re-checks its condition.
POLL_S = 0.005


class HarnessError(Exception):
    """The harness itself could not do its job (a binary is missing, a service did not
    start): not a finding about the coordinator."""


def coordinator_executable() -> Path:
    """The `coordinator` console script of this interpreter's environment."""
    path = Path(sys.executable).parent / "coordinator"
    if not path.exists():
        raise HarnessError(
            f"no coordinator console script at {path}; install the project into this environment "
            "(pip install -e '.[dev]') and run the harness with its interpreter"
        )
    return path


async def wait_for(condition: Callable[[], bool], what: str, limit_s: float) -> None:
    """Poll ``condition`` until it holds; HarnessError naming ``what`` after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise HarnessError(f"no {what} within {limit_s:g}s")
        await asyncio.sleep(POLL_S)  # polling a condition, bounded by the deadline


@dataclass
class Process:
    """One incarnation of a process the harness started."""

    role: str
    proc: asyncio.subprocess.Process
    stdout: Path
    stderr: Path
    started: float  # time.monotonic() at spawn
    killed: bool = False  # SIGKILLed by the harness
    stopped: bool = False  # SIGTERMed by the harness
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def errors(self, chars: int = 2000) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return text[-chars:]

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.errors(6000).splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def json_lines(self, key: str = "workflow_id") -> list[dict[str, Any]]:
        """The JSON objects it printed that carry ``key`` (a `--json` report)."""
        rows = []
        for line in self.output().splitlines():
            if line.startswith("{") and f'"{key}"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    rows.append(json.loads(line))
        return rows

    async def kill(self) -> None:
        """SIGKILL (it may have exited on its own just before: then nothing is sent)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
                self.killed = True
        await self.wait()

    async def terminate(self, grace_s: float) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
                self.stopped = True
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                await self.kill()
        return await self.wait()

    async def wait(self) -> int:
        code = await self.proc.wait()
        if self.ended is None:
            self.ended = time.monotonic()
        return code


@dataclass
class ProcessStarter:
    """Starts `coordinator` processes with their output in numbered log files."""

    logs: Path
    cwd: Path
    started: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.executable = coordinator_executable()

    async def spawn(
        self, role: str, *args: str, program: str | None = None, env: dict[str, str] | None = None
    ) -> Process:
        """Start ``coordinator ARGS`` (or ``program ARGS``) as ``role``."""
        stem = f"{len(self.started):03d}-{re.sub(r'[^A-Za-z0-9_.-]', '-', role)}"
        stdout, stderr = self.logs / f"{stem}.out", self.logs / f"{stem}.err"
        # Wide columns: rich wraps long lines (a worker's ready line) at 80 otherwise.
        environment = {**os.environ, "COLUMNS": "400", **(env or {})}
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                program or str(self.executable),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=environment,
                start_new_session=True,  # a Ctrl-C of the harness reaches only the harness, which cleans up
            )
        process = Process(role, proc, stdout, stderr, time.monotonic())
        self.started.append(process)
        return process

    async def close(self) -> None:
        """Kill whatever is still running (the harness is ending, or failed)."""
        for process in self.started:
            if process.alive:
                await process.kill()


@dataclass(frozen=True)
class Sandbox:
    """The services, served by a process of their own that is never killed."""

    url: str
    store: Path
    process: Process


@asynccontextmanager
async def served_sandbox(starter: ProcessStarter, store: Path, scenario: Path) -> AsyncIterator[Sandbox]:
    """``coordinator sandbox --port 0 --store STORE --scenario SCENARIO`` until the block ends."""
    process = await starter.spawn(
        "sandbox", "sandbox", "--port", "0", "--store", str(store), "--scenario", str(scenario)
    )
    try:

        def ready() -> bool:
            if not process.alive:
                raise HarnessError(f"the sandbox exited {process.returncode}: {process.errors()}")
            return READY.search(process.output()) is not None

        await wait_for(ready, "sandbox ready line", 60.0)
        match = READY.search(process.output())
        assert match is not None
        yield Sandbox(match[1], store, process)
    finally:
        await process.terminate(10.0)
