"""Events (core/events.py): CloudEvents 1.0 envelopes with deterministic ids, one
trace per run, reproducible times under a logical clock, and old bodies still read."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat

from agent_coordinator.core.errors import MalformedEvent
from agent_coordinator.core.events import Event, EventFactory, LogicalClock, parse_event

JSON = JSONFormat()


def test_the_same_seed_mints_the_same_ids_and_another_seed_other_ones() -> None:
    first, again, other = (EventFactory(seed=s, clock=LogicalClock()) for s in (1, 1, 2))
    starts = [f.event("TripStarted", subject="t-1", source="workflow/trip") for f in (first, again, other)]
    assert starts[0] == starts[1]
    assert starts[0].id != starts[2].id
    assert starts[0].traceparent.split("-")[1] != starts[2].traceparent.split("-")[1]


def test_an_effects_id_follows_from_its_cause_whatever_the_seed_of_who_mints_it() -> None:
    # A resume or a worker with another seed carries the run on with the very same ids.
    start = EventFactory(seed=1).event("TripStarted", subject="t-1", source="workflow/trip")
    effects = [
        EventFactory(seed=s).event("FlightSucceeded", subject="t-1", source="agent/airline", cause=start)
        for s in (1, 99)
    ]
    assert effects[0].id == effects[1].id != start.id
    assert EventFactory().event("FlightFailed", subject="t-1", source="agent/airline", cause=start).id != effects[0].id


def test_a_run_is_one_trace_and_each_event_its_own_span() -> None:
    factory = EventFactory(clock=LogicalClock())
    start = factory.event("TripStarted", subject="t-1", source="workflow/trip")
    effect = factory.event("FlightSucceeded", subject="t-1", source="agent/airline", cause=start)
    _, start_trace, start_span, _ = start.traceparent.split("-")
    _, effect_trace, effect_span, flags = effect.traceparent.split("-")
    assert effect_trace == start_trace and effect_span != start_span and flags == "01"


def test_a_logical_clock_stamps_a_start_with_its_epoch_and_an_effect_one_millisecond_later() -> None:
    clock = LogicalClock()
    factory = EventFactory(clock=clock)
    start = factory.event("TripStarted", subject="t-1", source="workflow/trip")
    effect = factory.event("FlightSucceeded", subject="t-1", source="agent/airline", cause=start)
    assert start.time == clock.epoch and effect.time - start.time == timedelta(milliseconds=1)


def test_an_event_is_a_cloudevent_in_canonical_json() -> None:
    _, effect = a_cause_and_its_effect()
    body = json.loads(effect.to_json())
    assert body["specversion"] == "1.0" and body["datacontenttype"] == "application/json"
    assert effect.to_json() == json.dumps(body, sort_keys=True, separators=(",", ":"))
    cloudevent = JSON.read(None, effect.to_json())  # the SDK validates it
    assert (cloudevent.get_id(), cloudevent.get_type(), cloudevent.get_subject()) == (effect.id, effect.type, "o-1")
    assert "signingkey" not in body and "signature" not in body  # unsigned: absent, not null


def test_an_envelope_that_is_not_one_is_refused_naming_each_field() -> None:
    with pytest.raises(MalformedEvent, match=r"not a valid event envelope: id: Field required; .*traceparent"):
        parse_event({"source": "x", "type": "T", "subject": "s", "time": "2026-01-01T00:00:00Z"})
    _, effect = a_cause_and_its_effect()
    with pytest.raises(MalformedEvent, match="colour: Extra inputs are not permitted"):
        parse_event({**json.loads(effect.to_json()), "colour": "red"})


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
