"""Where the shell writes: stdout for results, stderr for problems, and how a command fails."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from agent_coordinator.shell.reporting import (
    EXIT_UNUSABLE,
)

console = Console()

#: Problems are printed whole, never hard-wrapped: a path or an id cut at the column
#: limit cannot be copied back into a command, and the terminal wraps long lines itself.
errors = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_UNUSABLE) -> typer.Exit:
    """Print ``message`` as an error (verbatim: no markup, no highlighting) and return
    the Exit to raise."""
    errors.print(Text(message, style="red"))
    return typer.Exit(code)


def warn(message: str) -> None:
    errors.print(Text(message, style="yellow"))
