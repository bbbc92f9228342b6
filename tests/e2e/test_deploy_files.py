"""The deployment files (docs/deploy/): this machine has no container runtime, so
they are not run here -- but every command in the compose file must be one the
coordinator accepts, and every setting it passes by environment one the coordinator
reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer._click import Context
from typer._click.exceptions import UsageError
from typer.main import get_command

from agent_coordinator.core.signing import KEYS_ENV
from agent_coordinator.shell.cli import app
from agent_coordinator.shell.options import BUS_ENV, STATE_ENV, bus_spec
from agent_coordinator.shell.server import TOKENS_ENV

COMPOSE = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "compose.yaml"


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return {name: spec for name, spec in loaded["services"].items() if "build" in spec}


def test_every_coordinator_command_in_the_compose_file_parses() -> None:
    group = get_command(app)  # typer's own copy of click: its classes, not click's
    found = services()
    assert {"migrate", "server", "server-choreography", "orchestration-worker", "payment"} <= set(found)
    for name, spec in found.items():
        name_and_args = [str(a) for a in spec["command"]]
        command = group.get_command(Context(group), name_and_args[0])  # type: ignore[attr-defined]
        assert command is not None, f"{name}: no command {name_and_args[0]!r}"
        try:
            command.make_context(name_and_args[0], name_and_args[1:])
        except UsageError as exc:
            pytest.fail(f"service {name}: {' '.join(name_and_args)}: {exc.format_message()}")


def test_the_environment_it_sets_is_what_the_coordinator_reads() -> None:
    for name, spec in services().items():
        for variable in spec["environment"]:
            assert variable in {STATE_ENV, BUS_ENV, KEYS_ENV, TOKENS_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT"}, (
                name,
                variable,
            )


def test_the_bus_from_the_environment_applies_only_where_a_bus_means_something(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BUS_ENV, "amqp://broker/")
    assert bus_spec(None, applies=True) == "amqp://broker/"
    assert bus_spec(None, applies=False) is None  # an orchestration run of its own ignores it
    assert bus_spec("nats://other", applies=False) == "nats://other"  # a flag is a flag
