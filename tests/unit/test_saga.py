"""The saga's decisions (core/saga.py): what follows each event, what each event
carries, who may emit it, and how a run's events read back as its result."""

from __future__ import annotations

from typing import Any

import pytest

from agent_coordinator.core.errors import MalformedEvent
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import StepStatus, WorkflowStatus
from agent_coordinator.core.saga import OWNER, Action, NextAction, Saga, StepReport
from tests.unit.trip import CAR, FLIGHT, HOTEL, TRIP, trip_saga

SAGA = trip_saga()
TRIP_INPUT = {"trip_id": "t-1", "nights": 2}
DONE = StepReport(ok=True, result={"booking": "b-1"})
REFUSED = StepReport(ok=False, reason="sold out")


def start(trip: dict[str, Any] | None = None, saga: Saga = SAGA) -> Event:
    trip = trip or TRIP_INPUT
    return saga.started(trip["trip_id"], trip)


# -- what follows what -------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("TripStarted", NextAction(Action.PERFORM, FLIGHT)),
        ("FlightSucceeded", NextAction(Action.PERFORM, HOTEL)),
        ("HotelSucceeded", NextAction(Action.PERFORM, CAR)),
        ("CarSucceeded", NextAction(Action.COMPLETE)),
    ],
)
def test_each_success_performs_the_next_step_and_the_last_completes(event_type: str, expected: NextAction) -> None:
    assert SAGA.next_action(event_type) == expected


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("CarFailed", NextAction(Action.COMPENSATE, HOTEL)),
        ("HotelFailed", NextAction(Action.COMPENSATE, FLIGHT)),
        ("FlightFailed", NextAction(Action.CANCEL)),
    ],
)
def test_a_failed_step_undoes_the_step_before_it_or_cancels_when_it_is_the_first(
    event_type: str, expected: NextAction
) -> None:
    assert SAGA.next_action(event_type) == expected


def test_compensations_unwind_in_reverse_down_to_the_cancel() -> None:
    assert SAGA.next_action("HotelCompensated") == NextAction(Action.COMPENSATE, FLIGHT)
    assert SAGA.next_action("FlightCompensated") == NextAction(Action.CANCEL)


def test_an_undo_that_failed_still_unwinds_the_rest() -> None:
    # The run will need attention, but the steps before are undone all the same.
    assert SAGA.next_action("HotelCompensatedFailed") == NextAction(Action.COMPENSATE, FLIGHT)
    assert SAGA.next_action("FlightCompensatedFailed") == NextAction(Action.CANCEL)


def test_an_approval_waits_for_a_person_then_performs_the_step_or_unwinds() -> None:
    assert SAGA.next_action("HotelApprovalRequested") is None
    assert SAGA.is_pause("HotelApprovalRequested") and not SAGA.is_pause("HotelApproved")
    assert SAGA.next_action("HotelApproved") == NextAction(Action.PERFORM, HOTEL)
    assert SAGA.next_action("HotelRejected") == NextAction(Action.COMPENSATE, FLIGHT)


def test_a_model_outage_stops_the_run_until_it_is_resumed_at_the_same_step() -> None:
    assert SAGA.next_action("HotelStopped") is None
    assert SAGA.is_stop("HotelStopped") and not SAGA.is_terminal("HotelStopped")
    assert SAGA.next_action("HotelResumed") == NextAction(Action.PERFORM, HOTEL)


def test_nothing_follows_a_terminal_event() -> None:
    assert SAGA.next_action("TripCompleted") is None and SAGA.next_action("TripCancelled") is None
    assert SAGA.terminal_events == ("TripCompleted", "TripCancelled")


def test_an_unknown_event_type_is_refused_naming_the_workflows_types() -> None:
    with pytest.raises(KeyError, match=r"'Nonsense' is not part of workflow 'trip'; its types: \['TripStarted'"):
        SAGA.next_action("Nonsense")


def test_only_a_step_with_an_approval_rule_has_approval_events() -> None:
    assert "HotelApprovalRequested" in SAGA.event_types
    assert "FlightApprovalRequested" not in SAGA.event_types


def test_the_subscription_table_holds_every_event_that_triggers_something() -> None:
    table = SAGA.triggers()
    assert set(table) == set(SAGA.event_types) - {
        "TripCompleted",
        "TripCancelled",
        "HotelApprovalRequested",
        *(f"{s.title}Stopped" for s in TRIP.steps),
    }
    assert all(table[t] == SAGA.next_action(t) for t in table)


# -- approvals -----------------------------------------------------------------------


def test_the_approval_rule_decides_unless_the_cause_already_settled_it() -> None:
    long_trip = {"trip_id": "t-2", "nights": 9}
    flown = SAGA.performed(FLIGHT, DONE, cause=start(long_trip))
    assert SAGA.approval_reason(HOTEL, cause=flown, parameters={}) == "9 nights is more than 7"
    assert SAGA.approval_reason(HOTEL, cause=flown, parameters={"max_nights": 10}) is None
    assert SAGA.approval_reason(FLIGHT, cause=start(long_trip), parameters={}) is None  # no rule
    asked = SAGA.approval_requested(HOTEL, "9 nights is more than 7", cause=flown)
    approved = SAGA.approval_decided(HOTEL, approved=True, by="ana", note="", cause=asked)
    assert SAGA.approval_reason(HOTEL, cause=approved, parameters={}) is None
    resumed = SAGA.resumed(cause=SAGA.performed(HOTEL, StepReport(ok=False, stopped=True, reason="x"), cause=flown))
    assert SAGA.approval_reason(HOTEL, cause=resumed, parameters={}) is None


def test_a_rejection_fails_the_step_with_the_persons_note() -> None:
    flown = SAGA.performed(FLIGHT, DONE, cause=start())
    asked = SAGA.approval_requested(HOTEL, "why", cause=flown)
    rejected = SAGA.approval_decided(HOTEL, approved=False, by="ana", note="too dear", cause=asked)
    assert (rejected.type, rejected.source) == ("HotelRejected", "person/ana")
    assert rejected.data["failure"] == {"step": "hotel", "reason": "rejected by ana: too dear"}
    assert SAGA.logged_decision([start(), flown, asked]) is None
    assert SAGA.logged_decision([start(), flown, asked, rejected]) == {
        "approved": False,
        "by": "ana",
        "note": "too dear",
    }


# -- what the events carry ---------------------------------------------------------------


def test_a_completed_run_carries_every_result_to_its_end() -> None:
    events = [start()]
    for step in TRIP.steps:
        events.append(SAGA.performed(step, StepReport(ok=True, result={"id": step.name}), cause=events[-1]))
    events.append(SAGA.finished(cause=events[-1]))
    assert events[-1].type == "TripCompleted"
    assert events[-1].data["results"] == {"flight": {"id": "flight"}, "hotel": {"id": "hotel"}, "car": {"id": "car"}}
    assert [e.causation_id for e in events[1:]] == [e.id for e in events[:-1]]


def test_a_refused_and_unwound_run_is_cancelled_compensated() -> None:
    flown = SAGA.performed(FLIGHT, DONE, cause=start())
    refused = SAGA.performed(HOTEL, REFUSED, cause=flown)
    undone = SAGA.compensated(FLIGHT, StepReport(ok=True, result={"cancelled": True}), cause=refused)
    cancelled = SAGA.finished(cause=undone)
    assert (refused.type, undone.type, cancelled.type) == ("HotelFailed", "FlightCompensated", "TripCancelled")
    assert cancelled.data["status"] == WorkflowStatus.COMPENSATED
    assert cancelled.data["failure"] == {"step": "hotel", "reason": "sold out"}


def test_an_undo_that_failed_ends_the_run_needing_attention() -> None:
    refused = SAGA.performed(HOTEL, REFUSED, cause=SAGA.performed(FLIGHT, DONE, cause=start()))
    stuck = SAGA.compensated(FLIGHT, StepReport(ok=False, reason="airline down"), cause=refused)
    assert stuck.type == "FlightCompensatedFailed"
    cancelled = SAGA.finished(cause=stuck)
    assert cancelled.data["status"] == WorkflowStatus.NEEDS_ATTENTION
    assert cancelled.data["compensation_failures"] == [{"step": "flight", "reason": "airline down"}]


def test_a_failure_whose_effect_is_unknown_ends_the_run_needing_attention() -> None:
    unknown = StepReport(ok=False, reason="timed out", uncertain=True)
    cancelled = SAGA.finished(cause=SAGA.performed(FLIGHT, unknown, cause=start()))
    assert cancelled.data["status"] == WorkflowStatus.NEEDS_ATTENTION
    assert cancelled.data["compensation_failures"][0]["step"] == "flight"


def test_an_outage_unwound_by_policy_needs_attention_and_is_no_undo_failure() -> None:
    outage = StepReport(ok=False, reason="model unreachable", attention="not refused: the model was down")
    failed = SAGA.performed(HOTEL, outage, cause=SAGA.performed(FLIGHT, DONE, cause=start()))
    assert failed.type == "HotelFailed"
    undone = SAGA.compensated(FLIGHT, DONE, cause=failed)
    result = SAGA.result("t-1", [start(), failed, undone, SAGA.finished(cause=undone)], mode="test")
    assert result.status is WorkflowStatus.NEEDS_ATTENTION
    assert result.reason == (
        "step 'hotel' failed: model unreachable; step 'hotel' needs attention: not refused: the model was down"
    )


def test_a_stopped_run_reads_as_failed_with_the_command_that_resumes_it() -> None:
    stopped = SAGA.performed(FLIGHT, StepReport(ok=False, stopped=True, reason="no model"), cause=start())
    assert stopped.type == "FlightStopped" and stopped.data["reason"] == "no model"
    result = SAGA.result("t-1", [start(), stopped], mode="test")
    assert result.status is WorkflowStatus.FAILED
    assert result.reason is not None and "nothing undone: no model" in result.reason
    assert "`coordinator resume t-1`" in result.reason
    assert SAGA.resumed(cause=stopped).type == "FlightResumed"


def test_only_a_stopped_run_can_be_resumed_and_only_an_ending_event_finishes_one() -> None:
    with pytest.raises(ValueError, match="only a <Step>Stopped event is resumed"):
        SAGA.resumed(cause=start())
    with pytest.raises(ValueError, match="TripStarted does not end workflow 'trip'"):
        SAGA.finished(cause=start())


def test_a_deadline_failure_is_signed_by_the_owner_and_says_so() -> None:
    late = SAGA.performed(FLIGHT, StepReport(ok=False, reason="no answer"), cause=start(), signed_by=OWNER)
    assert late.source == "workflow/trip" and late.data["failure"]["by"] == OWNER


def test_an_events_result_is_its_own_copy() -> None:
    result: dict[str, Any] = {"seats": [1]}
    event = SAGA.performed(FLIGHT, StepReport(ok=True, result=result), cause=start())
    result["seats"].append(2)  # a tool that changes what it returned
    assert event.data["result"] == {"seats": [1]}


# -- reading a run back ---------------------------------------------------------------------


def test_a_runs_result_counts_each_event_once_and_reports_each_step() -> None:
    flown = SAGA.performed(FLIGHT, DONE, cause=start())
    refused = SAGA.performed(HOTEL, REFUSED, cause=flown)
    undone = SAGA.compensated(FLIGHT, DONE, cause=refused)
    other_run = start({"trip_id": "t-9"})
    events = [start(), flown, flown, other_run, refused, undone, SAGA.finished(cause=undone)]
    result = SAGA.result("t-1", events, mode="test")
    assert result.status is WorkflowStatus.COMPENSATED
    assert len(result.events) == 5
    assert [(o.step, o.status) for o in result.steps] == [
        ("flight", StepStatus.COMPENSATED),
        ("hotel", StepStatus.FAILED),
        ("car", StepStatus.PENDING),
    ]


def test_a_run_waiting_for_approval_or_cut_short_says_so() -> None:
    asked = SAGA.approval_requested(HOTEL, "long", cause=SAGA.performed(FLIGHT, DONE, cause=start()))
    waiting = SAGA.result("t-1", [start(), asked], mode="test")
    assert waiting.status is WorkflowStatus.AWAITING_APPROVAL
    cut = SAGA.result("t-1", [start()], mode="test")
    assert cut.status is WorkflowStatus.FAILED
    assert cut.reason == "the run stopped before its end; its last event is TripStarted"


# -- who may emit what, and what each type must carry ---------------------------------------


def test_who_may_emit_what_follows_the_workflow_definition() -> None:
    assert SAGA.emitters("TripStarted") == {OWNER}
    assert SAGA.emitters("FlightSucceeded") == {"airline"}
    assert SAGA.emitters("HotelFailed") == {"hotelier", OWNER}  # the owner, on a deadline
    assert SAGA.emitters("HotelCompensatedFailed") == {"hotelier", OWNER}
    assert SAGA.emitters("HotelApprovalRequested") == {"hotelier"}
    assert SAGA.emitters("HotelApproved") == SAGA.emitters("HotelResumed") == {OWNER}
    assert SAGA.emitters("TripCompleted") == SAGA.emitters("TripCancelled") == {OWNER}
    assert SAGA.emitters("Nonsense") == frozenset()


def test_what_each_type_requires_names_the_missing_result_and_a_foreign_input() -> None:
    started = start()
    booked_early = SAGA.factory.event(
        "HotelSucceeded",
        subject="t-1",
        source="agent/hotelier",
        data={"input": {"trip_id": "t-2"}, "results": {"hotel": {}}, "step": "hotel"},
        cause=started,
    )
    with pytest.raises(MalformedEvent, match="lacks the result of 'flight'") as caught:
        SAGA.check_event(booked_early)
    assert "data.input is the input of 't-2', not of the event's subject 't-1'" in str(caught.value)
    SAGA.check_event(started)  # a genuine start is fine


def test_an_event_without_data_is_refused_naming_each_missing_field() -> None:
    empty = SAGA.factory.event("HotelFailed", subject="t-1", source="agent/hotelier")
    with pytest.raises(MalformedEvent) as caught:
        SAGA.check_event(empty)
    assert str(caught.value).endswith(
        "cannot be acted on: data.input is missing or not an object (the workflow input); "
        "data.results is missing or not an object (the results of the steps done); "
        "data.step is None, not 'hotel'"
    )
    with pytest.raises(MalformedEvent, match="not an event type of workflow 'trip'"):
        SAGA.check_event(SAGA.factory.event("Nonsense", subject="t-1", source="x"))
    with pytest.raises(MalformedEvent, match=r"data.input is not a valid Trip \(invalid Trip: nights"):
        SAGA.check_event(start({"trip_id": "t-1", "nights": "many"}))
