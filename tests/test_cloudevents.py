"""Events are valid CloudEvents: the envelope's attribute names, and old rows still read.

Validation is the CloudEvents SDK's (``cloudevents.core``): its ``CloudEvent``
refuses an event whose required attributes are missing or whose extension names
are not lowercase letters and digits -- which ``causation_id`` was.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat

from coordinator import LogicalClock, SqliteEventLog
from coordinator.events import Event, EventFactory, parse_event

JSON = JSONFormat()


# --------------------------------------------------------------------------- the envelope itself


def a_cause_and_its_effect() -> tuple[Event, Event]:
    factory = EventFactory(clock=LogicalClock())
    start = factory.event("OrderPlaced", subject="o-1", source="workflow/orders", data={"order_id": "o-1"})
    return start, factory.event("InventoryReserved", subject="o-1", source="agent/inventory", cause=start)


def test_the_cause_is_the_causationid_extension_and_absent_on_a_start_event() -> None:
    start, effect = a_cause_and_its_effect()

    assert json.loads(effect.to_json())["causationid"] == start.id == effect.causation_id
    assert "causationid" not in json.loads(start.to_json())  # CloudEvents has no null attributes
    assert "causation_id" not in effect.to_json()
    assert effect.model_dump(mode="json") == json.loads(effect.to_json())
    assert effect.model_dump(by_alias=False)["causationid"] == start.id  # one name, however dumped


def test_the_sdk_refuses_the_old_attribute_name_and_accepts_the_new_one() -> None:
    _, effect = a_cause_and_its_effect()
    old = json.loads(effect.to_json())
    old["causation_id"] = old.pop("causationid")

    with pytest.raises(CloudEventValidationError, match="causation_id"):
        JSON.read(None, json.dumps(old))
    assert JSON.read(None, effect.to_json()).get_extension("causationid") == effect.causation_id


def old_body(event: Event) -> str:
    """``event`` as the event log stored it before: ``causation_id``, null on a start event."""
    body = json.loads(event.to_json())
    body["causation_id"] = body.pop("causationid", None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("form", ["text", "bytes", "mapping"])
def test_parse_event_reads_bodies_written_with_causation_id(form: str) -> None:
    for event in a_cause_and_its_effect():
        text = old_body(event)
        raw: str | bytes | dict[str, Any] = {"text": text, "bytes": text.encode(), "mapping": json.loads(text)}[form]
        assert parse_event(raw) == event


def test_an_event_log_with_rows_written_before_reads_them_unchanged(tmp_path: Path) -> None:
    start, effect = a_cause_and_its_effect()
    path = tmp_path / "events.db"
    log = SqliteEventLog(path)
    log.append([start], run_id="run-old")
    log.append([effect])
    log.close()
    with sqlite3.connect(path) as db:  # rewrite the rows as the previous version wrote them
        for event in (start, effect):
            db.execute("UPDATE events SET body = ? WHERE id = ?", (old_body(event), event.id))
        assert all("causation_id" in body for (body,) in db.execute("SELECT body FROM events"))

    reopened = SqliteEventLog(path)
    try:
        assert reopened.events("o-1") == [start, effect]
        reopened.append([effect])  # the same event again is still the same row
        assert reopened.events("o-1") == [start, effect]
    finally:
        reopened.close()
