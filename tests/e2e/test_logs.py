"""Logs of workers and the server: JSON lines with a handled event's fields, and
never a secret, in either format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from agent_coordinator.shell.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_handled_events_fields_and_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdef")
    configure_logging("info", "json")
    log = logging.getLogger("agent_coordinator.bus.choreography")
    log.debug("not shown at info")
    log.info(
        "payment handled %s: %s",
        "InventoryReserved",
        "PaymentFailed",
        extra={"workflow_id": "o-1004", "event": "InventoryReserved", "step": "payment", "duration_ms": 9.2},
    )
    log.warning("the provider said: bad key sk-live-0123456789abcdef")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["info", "warning"]
    assert lines[0]["workflow_id"] == "o-1004" and lines[0]["step"] == "payment" and lines[0]["duration_ms"] == 9.2
    assert lines[0]["message"] == "payment handled InventoryReserved: PaymentFailed"
    assert lines[1]["message"] == "the provider said: bad key ***"


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_are_redacted_too(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-abcdef0123456789")
    configure_logging("warning", "text")
    logging.getLogger("x").warning("key sk-ant-abcdef0123456789 refused")
    err = capsys.readouterr().err
    assert "key *** refused" in err and "sk-ant" not in err
