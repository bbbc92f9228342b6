"""``python -m agent_coordinator`` is the ``coordinator`` command."""

from agent_coordinator.shell.cli import app

app()
