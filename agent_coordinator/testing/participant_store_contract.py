"""The participant store conformance suite: :class:`ParticipantStoreContract`.

A participant store (:class:`~agent_coordinator.bus.outbox.ParticipantStore`: a
choreography participant's inbox, outbox, attempt journal and deadlines) is ready
when it passes this suite. To run it on yours, subclass it in a test module and
give it a ``store_factory`` fixture::

    import pytest

    from agent_coordinator.testing.participant_store_contract import ParticipantStoreContract, StoreFactory


    class TestMyStore(ParticipantStoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path) -> StoreFactory:
            async def open_store(*, claim_timeout: float):
                return await MyStore.open(tmp_path / "state", claim_timeout=claim_timeout)

            return open_store

The suite closes every store it opens. It needs ``pytest-asyncio`` (its tests are
marked ``asyncio``). A capability a store lacks is a flag set to False, which skips
the tests that need it; never edit the tests for a backend. This module imports
pytest: import it from your tests only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import ClassVar, Protocol

import pytest
import pytest_asyncio

from agent_coordinator.bus.outbox import ParticipantStore
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.testing.suite import ConformanceSuite, closed_after

__all__ = ["ParticipantStoreContract", "StoreFactory"]

WAIT = 5.0  # seconds any single wait may take before the test fails
LONG_CLAIM = 3600.0  # a claim timeout no test outlives: a relay's claim stays its own


class StoreFactory(Protocol):
    """Opens a handle on the test's store (every call another handle on the same
    storage -- another member process -- fresh for each test) whose claims expire
    after ``claim_timeout`` seconds."""

    def __call__(self, *, claim_timeout: float) -> Awaitable[ParticipantStore]: ...


class _OpenStore(Protocol):
    """What the suite's tests use: a :class:`StoreFactory` whose claim timeout defaults to an hour."""

    def __call__(self, *, claim_timeout: float = ...) -> Awaitable[ParticipantStore]: ...


def _events(count: int, *, tag: str = "e") -> list[Event]:
    factory = EventFactory(seed=11)
    return [
        factory.event("StockReserved", subject=f"order-{tag}{i}", source="contract-test", data={"n": i, "tag": tag})
        for i in range(count)
    ]


def _trigger(tag: str = "t") -> Event:
    return EventFactory(seed=3).event("OrderPlaced", subject=f"order-{tag}", source="contract-test")


class _Unserialisable:
    """A value no JSON encoder accepts: an event carrying it cannot be written."""


@pytest.mark.asyncio
class ParticipantStoreContract(ConformanceSuite):
    """The :class:`~agent_coordinator.bus.outbox.ParticipantStore` contract, as tests a store must pass.

    * inbox: ``handled(group, event_id)`` is true once ``commit`` marked it, per group;
    * ``commit(group, event_id, emitted)`` marks the event and queues ``emitted`` in
      ONE transaction -- both or neither -- and a second commit of the same
      handling queues nothing more; ``enqueue`` queues without a mark;
    * relay: ``claim(owner, limit)`` gives up to ``limit`` unpublished rows in commit
      order; an owner gets its own unpublished rows again, never another live
      relay's, and takes over rows claimed longer than ``claim_timeout`` ago;
      ``published(row_ids)`` rows are never claimed again;
    * attempt journal: ``attempted`` is true once ``note_attempt`` was called, per group;
    * deadlines: due at their time, armed once unless ``replace``, disarmed for
      good, and ``claim_due_deadlines`` hands each due deadline to exactly one of
      several claimers, moving it to ``extend_to``.

    Subclass it as ``Test<YourStore>``, define the ``store_factory`` fixture (a
    :class:`StoreFactory`) and set the capability flags:

    * ``concurrent_handles`` -- several handles on one store (the members of a
      group, in several processes) share its inbox, outbox and deadlines;
    * ``durable`` -- a handle opened after the others closed finds everything.
    """

    concurrent_handles: ClassVar[bool] = True
    durable: ClassVar[bool] = True

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        """Opens a handle on the store under test: define it in your subclass."""
        self._missing_factory(
            "ParticipantStore", "store_factory", "`async def open_store(*, claim_timeout: float) -> ParticipantStore`"
        )

    @pytest_asyncio.fixture
    async def open_store(self, store_factory: StoreFactory) -> AsyncIterator[_OpenStore]:
        """``store_factory`` (``claim_timeout`` defaulting to an hour), with every
        handle it opened closed after the test."""
        async with closed_after(store_factory) as open_tracked:

            def open_(*, claim_timeout: float = LONG_CLAIM) -> Awaitable[ParticipantStore]:
                return open_tracked(claim_timeout=claim_timeout)

            yield open_

    # -- inbox and outbox --------------------------------------------------------------

    async def test_an_event_is_handled_once_committed_and_only_for_its_group(self, open_store: _OpenStore) -> None:
        store = await open_store()
        trigger = _trigger()
        assert not await store.handled("payment", trigger.id)

        await store.commit("payment", trigger.id, [])

        assert await store.handled("payment", trigger.id)
        assert not await store.handled("shipping", trigger.id)
        assert not await store.handled("payment", "another-event")

    async def test_a_commit_queues_its_events_for_the_relay_in_commit_order(self, open_store: _OpenStore) -> None:
        store = await open_store()
        first, second = _events(3, tag="a"), _events(2, tag="b")

        await store.commit("payment", "trigger-1", first)
        await store.commit("shipping", "trigger-1", second)  # the same trigger, another group
        rows = await store.claim("relay-1", 100)

        assert [event for _, event in rows] == first + second
        assert [event.to_json() for _, event in rows] == [e.to_json() for e in first + second]
        row_ids = [row_id for row_id, _ in rows]
        assert row_ids == sorted(row_ids) and len(set(row_ids)) == len(row_ids)

    async def test_committing_the_same_handling_again_queues_nothing_more(self, open_store: _OpenStore) -> None:
        store = await open_store()
        emitted = _events(2)

        await store.commit("payment", "trigger-1", emitted)
        await store.commit("payment", "trigger-1", emitted)  # a redelivered trigger, handled again
        await store.commit("payment", "trigger-1", _events(1, tag="other"))

        assert [event for _, event in await store.claim("relay-1", 100)] == emitted

    async def test_a_commit_that_fails_leaves_neither_the_mark_nor_any_event(self, open_store: _OpenStore) -> None:
        """The mark and the events are one transaction: a trigger whose events could
        not be written stays unhandled, so its redelivery runs the handler again."""
        store = await open_store()
        (good,) = _events(1)
        bad = EventFactory().event("PaymentFailed", subject="order-x", source="t", data={"v": _Unserialisable()})

        with pytest.raises(Exception):  # noqa: B017 -- whatever the store's encoder raises
            await store.commit("payment", "trigger-1", [good, bad])

        assert not await store.handled("payment", "trigger-1")
        assert await store.claim("relay-1", 100) == []
        await store.commit("payment", "trigger-1", [good])  # the redelivery commits
        assert [event for _, event in await store.claim("relay-1", 100)] == [good]

    async def test_enqueued_events_are_queued_without_marking_anything(self, open_store: _OpenStore) -> None:
        store = await open_store()
        started, committed, failed = _events(1, tag="s"), _events(1, tag="c"), _events(2, tag="f")

        await store.enqueue(started)
        await store.commit("payment", "trigger-1", committed)
        await store.enqueue(failed)
        await store.enqueue([])

        assert [event for _, event in await store.claim("relay-1", 100)] == started + committed + failed
        assert not await store.handled("payment", started[0].id)

    # -- the relay ---------------------------------------------------------------------

    async def test_a_claim_takes_at_most_limit_rows_oldest_first(self, open_store: _OpenStore) -> None:
        store = await open_store()
        emitted = _events(5)
        await store.enqueue(emitted)

        first = await store.claim("relay-1", 2)
        assert [event for _, event in first] == emitted[:2]
        await store.published([row_id for row_id, _ in first])
        assert [event for _, event in await store.claim("relay-1", 2)] == emitted[2:4]

    async def test_a_relay_gets_its_unpublished_rows_again_and_published_rows_never(
        self, open_store: _OpenStore
    ) -> None:
        store = await open_store()
        emitted = _events(3)
        await store.enqueue(emitted)

        claimed = await store.claim("relay-1", 100)
        again = await store.claim("relay-1", 100)  # its publish failed: it retries
        assert again == claimed

        await store.published([claimed[0][0], claimed[2][0]])
        assert await store.claim("relay-1", 100) == [claimed[1]]
        await store.published([claimed[1][0]])
        assert await store.claim("relay-1", 100) == []
        assert await store.claim("relay-2", 100) == []

    async def test_rows_a_live_relay_claimed_are_not_given_to_another(self, open_store: _OpenStore) -> None:
        store = await open_store()
        emitted = _events(4)
        await store.enqueue(emitted)

        mine = await store.claim("relay-1", 2)
        theirs = await store.claim("relay-2", 100)

        assert [event for _, event in mine] == emitted[:2]
        assert [event for _, event in theirs] == emitted[2:]
        assert await store.claim("relay-2", 100) == theirs
        assert await store.claim("relay-3", 100) == []

    async def test_two_relays_draining_at_once_publish_each_row_once(self, open_store: _OpenStore) -> None:
        self._require("concurrent_handles")
        first, second = await open_store(), await open_store()
        emitted = _events(60)
        await first.enqueue(emitted[:30])
        await second.enqueue(emitted[30:])
        published: list[tuple[str, Event]] = []

        async def drain(store: ParticipantStore, owner: str) -> None:
            while rows := await store.claim(owner, 7):
                for _, event in rows:
                    published.append((owner, event))
                await store.published([row_id for row_id, _ in rows])
                await asyncio.sleep(0)  # let the other relay claim in between

        async with asyncio.timeout(WAIT * 4):
            await asyncio.gather(drain(first, "relay-1"), drain(second, "relay-2"))

        counts = Counter(event.id for _, event in published)
        assert counts == Counter(event.id for event in emitted), "each row is published by exactly one relay"

    async def test_rows_of_a_relay_that_died_are_taken_over_after_the_claim_timeout(
        self, open_store: _OpenStore
    ) -> None:
        dead = await open_store()
        emitted = _events(3)
        await dead.enqueue(emitted)
        orphaned = await dead.claim("relay-dead", 100)  # and never marks them published
        assert len(orphaned) == 3
        patient = await open_store(claim_timeout=LONG_CLAIM)
        assert await patient.claim("relay-patient", 100) == []
        takeover = await open_store(claim_timeout=0.05)

        # Expiry is the store's clock passing claimed_at + claim_timeout: nothing to
        # wait on but the clock, so poll (bounded) until the takeover happens.
        async with asyncio.timeout(WAIT):
            while not (taken := await takeover.claim("relay-alive", 100)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        assert taken == orphaned
        assert await takeover.claim("relay-alive", 100) == orphaned  # now its own
        await takeover.published([row_id for row_id, _ in taken])
        assert await takeover.claim("relay-dead", 100) == []

    # -- the attempt journal -----------------------------------------------------------

    async def test_the_attempt_journal_remembers_a_begun_step_per_group(self, open_store: _OpenStore) -> None:
        store = await open_store()
        trigger = _trigger()
        assert not await store.attempted("payment", trigger.id)

        await store.note_attempt("payment", trigger.id)
        await store.note_attempt("payment", trigger.id)  # noted again on a redelivery

        assert await store.attempted("payment", trigger.id)
        assert not await store.attempted("shipping", trigger.id)
        assert not await store.handled("payment", trigger.id), "an attempt is not a handling"
        await store.commit("payment", trigger.id, [])
        assert await store.attempted("payment", trigger.id)

    # -- one answer per trigger ------------------------------------------------------

    async def test_the_first_answer_claimed_for_a_trigger_holds(self, open_store: _OpenStore) -> None:
        store = await open_store()
        trigger = _trigger()
        assert await store.claim_outcome(trigger.id, "processed") == "processed"
        assert await store.claim_outcome(trigger.id, "processed") == "processed", "the same answer, claimed again"
        assert await store.claim_outcome(trigger.id, "failed-by-owner") == "processed", "a rival answer loses"
        assert await store.claim_outcome(_trigger("other").id, "failed-by-owner") == "failed-by-owner"

    async def test_an_agent_and_an_owner_claiming_at_once_agree_on_one_answer(self, open_store: _OpenStore) -> None:
        self._require("concurrent_handles")
        agent, owner = await open_store(), await open_store()
        triggers = [_trigger(f"t{i}").id for i in range(40)]

        async def claim(store: ParticipantStore, answer: str) -> list[str]:
            won = []
            for trigger_id in triggers:
                won.append(await store.claim_outcome(trigger_id, f"{answer}-{trigger_id}"))
                await asyncio.sleep(0)  # let the other claimer in between
            return won

        async with asyncio.timeout(WAIT * 4):
            by_agent, by_owner = await asyncio.gather(claim(agent, "processed"), claim(owner, "failed"))
        assert by_agent == by_owner, "both sides see the same winner for every trigger"

    # -- deadlines ---------------------------------------------------------------------

    async def test_a_deadline_is_due_at_its_time_and_claiming_moves_it(self, open_store: _OpenStore) -> None:
        store = await open_store()
        await store.arm_deadline("order-1", 100.0)

        assert await store.claim_due_deadlines(99.9, extend_to=200.0) == []
        assert await store.claim_due_deadlines(100.0, extend_to=200.0) == ["order-1"]
        assert await store.claim_due_deadlines(150.0, extend_to=300.0) == []  # moved to 200
        assert await store.claim_due_deadlines(200.0, extend_to=300.0) == ["order-1"]  # still stuck: due again

    async def test_arming_again_keeps_the_deadline_unless_replaced(self, open_store: _OpenStore) -> None:
        store = await open_store()
        await store.arm_deadline("order-1", 100.0)
        await store.arm_deadline("order-1", 500.0)  # a redelivered start: the first deadline stands
        assert await store.claim_due_deadlines(100.0, extend_to=1000.0) == ["order-1"]

        await store.arm_deadline("order-1", 50.0, replace=True)
        assert await store.claim_due_deadlines(50.0, extend_to=1000.0) == ["order-1"]

    async def test_a_disarmed_deadline_is_never_due(self, open_store: _OpenStore) -> None:
        store = await open_store()
        await store.arm_deadline("order-1", 100.0)
        await store.arm_deadline("order-2", 100.0)

        await store.disarm_deadline("order-1")
        await store.disarm_deadline("never-armed")  # a no-op

        assert await store.claim_due_deadlines(10_000.0, extend_to=20_000.0) == ["order-2"]
        await store.arm_deadline("order-1", 100.0)  # a run that waits again is armed again
        assert await store.claim_due_deadlines(10_000.0, extend_to=20_000.0) == ["order-1"]

    async def test_due_deadlines_are_claimed_earliest_first_up_to_the_limit(self, open_store: _OpenStore) -> None:
        store = await open_store()
        for subject, due in [("order-c", 30.0), ("order-a", 10.0), ("order-d", 400.0), ("order-b", 20.0)]:
            await store.arm_deadline(subject, due)

        assert await store.claim_due_deadlines(100.0, extend_to=1000.0, limit=2) == ["order-a", "order-b"]
        assert await store.claim_due_deadlines(100.0, extend_to=1000.0, limit=2) == ["order-c"]

    async def test_two_owners_claiming_due_deadlines_at_once_each_get_a_deadline_once(
        self, open_store: _OpenStore
    ) -> None:
        self._require("concurrent_handles")
        first, second = await open_store(), await open_store()
        subjects = [f"order-{i:03}" for i in range(60)]
        for i, subject in enumerate(subjects):
            await (first if i % 2 else second).arm_deadline(subject, float(i))
        claimed: list[str] = []

        async def act_on_due(store: ParticipantStore) -> None:
            while due := await store.claim_due_deadlines(100.0, extend_to=10_000.0, limit=7):
                claimed.extend(due)
                await asyncio.sleep(0)  # let the other owner claim in between

        async with asyncio.timeout(WAIT * 4):
            await asyncio.gather(act_on_due(first), act_on_due(second), act_on_due(first))

        assert Counter(claimed) == Counter(subjects), "each due deadline is acted on by exactly one owner"

    # -- several handles, restarts -----------------------------------------------------

    async def test_members_sharing_a_store_see_each_others_marks_rows_and_deadlines(
        self, open_store: _OpenStore
    ) -> None:
        self._require("concurrent_handles")
        first, second = await open_store(), await open_store()
        emitted = _events(2)

        await first.note_attempt("payment", "trigger-1")
        await first.commit("payment", "trigger-1", emitted)
        await first.arm_deadline("order-1", 100.0)

        assert await second.handled("payment", "trigger-1")  # a redelivery to another member is a no-op
        assert await second.attempted("payment", "trigger-1")
        assert [event for _, event in await second.claim("relay-2", 100)] == emitted
        assert await second.claim_due_deadlines(100.0, extend_to=200.0) == ["order-1"]

    async def test_a_store_opened_again_finds_marks_rows_and_deadlines(self, open_store: _OpenStore) -> None:
        self._require("durable")
        store = await open_store()
        emitted = _events(3)
        await store.commit("payment", "trigger-1", emitted)
        await store.note_attempt("shipping", "trigger-1")
        await store.arm_deadline("order-1", 100.0)
        published = await store.claim("relay-1", 1)
        await store.published([row_id for row_id, _ in published])
        await store.close()

        reopened = await open_store()

        assert await reopened.handled("payment", "trigger-1")
        assert await reopened.attempted("shipping", "trigger-1")
        assert [event for _, event in await reopened.claim("relay-2", 100)] == emitted[1:]
        assert await reopened.claim_due_deadlines(100.0, extend_to=200.0) == ["order-1"]
