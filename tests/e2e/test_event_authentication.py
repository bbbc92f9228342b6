"""Events are checked on arrival: who emitted them, and what they carry (issue 12).

On the in-memory bus, the same checks that protect a broker (tests/e2e/test_forged_events.py):
a participant acts only on an event signed by an emitter the workflow lets emit its
type, and only when it carries the data its type requires; anything else is
dead-lettered at once with the reason, and the services see nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import MODES, LogicalClock, MemoryEventLog, WorkflowStatus, open_coordinator
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.bus.base import DeadLetter
from agent_coordinator.core.errors import UntrustedEvent
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.core.run import Coordinator
from agent_coordinator.core.saga import OWNER, Saga
from agent_coordinator.core.signing import Keyring, KeyringError, keys_directory
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.modes import Choreography
from tests.e2e.test_orders_e2e import EXPECTED, FAST, example_orders

PARTICIPANTS = (OWNER, "inventory", "payment", "shipping")
SAGA = Saga(ORDER_FULFILMENT, factory=EventFactory())


def order(order_id: str) -> dict[str, Any]:
    """A well-formed order (the first example's lines) under ``order_id``."""
    return {**example_orders()[0], "order_id": order_id}


@asynccontextmanager
async def orders_choreography(
    keys: Keyring | None, bus: InMemoryBus, **options: Any
) -> AsyncIterator[tuple[Coordinator, Sandbox]]:
    sandbox = Sandbox(Scenario.default())
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Choreography(bus=bus, **options),
            settings=FAST,
            clock=LogicalClock(),
            event_log=MemoryEventLog(),
            keys=keys,
        ) as coordinator,
    ):
        yield coordinator, sandbox


async def refused(bus: InMemoryBus, event: Event) -> list[DeadLetter]:
    """Publish ``event`` straight onto the bus, as an attacker with broker access
    would; return the dead letters it became once the bus is idle."""
    await bus.publish(event)
    await bus.wait_idle(timeout=5.0)
    return [d for d in await bus.dead_letters() if d.event.id == event.id]


def no_effects(sandbox: Sandbox, order_id: str) -> bool:
    return sandbox.effects_for(order_id).counts == {}


# -- signed runs ------------------------------------------------------------------------


async def test_signed_runs_end_as_expected_and_each_event_is_signed_by_its_emitter() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    bus = InMemoryBus()
    async with orders_choreography(keys, bus) as (coordinator, _):
        results = await coordinator.run_many(
            [ORDER_FULFILMENT.validate_input(o) for o in example_orders()], concurrency=8
        )
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert await bus.dead_letters() == []
    for result in results:
        for event in result.events:
            assert keys.verify(event) in SAGA.emitters(event.type), event.type
            assert event.signingkey == keys.key_id(keys.verify(event))


def test_a_signed_event_is_a_valid_cloudevent_whose_extensions_carry_the_signature() -> None:
    from cloudevents.core.formats.json import JSONFormat

    keys = Keyring.ephemeral([OWNER])
    event = keys.sign(SAGA.started("o-1", order("o-1")), as_=OWNER)
    cloudevent = JSONFormat().read(None, event.to_json())
    assert cloudevent.get_extension("signingkey") == keys.key_id(OWNER)
    assert cloudevent.get_extension("signature") == event.signature
    unsigned = SAGA.started("o-1", order("o-1"))
    assert "signature" not in unsigned.to_json() and "signingkey" not in unsigned.to_json()


async def test_both_modes_emit_the_same_signed_events_byte_for_byte() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    logs = {}
    for mode in MODES:
        sandbox = Sandbox(Scenario.default())
        async with (
            sandbox.client() as client,
            open_coordinator(
                ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode, clock=LogicalClock(), keys=keys
            ) as coordinator,
        ):
            result = await coordinator.run(order("o-bytes"))
        logs[mode] = [e.to_json() for e in result.events]
    assert logs["orchestration"] == logs["choreography"]
    assert all('"signature":' in line and '"signingkey":"' in line for line in logs["choreography"])


async def test_a_deadline_failure_signed_by_the_owner_unwinds_the_run() -> None:
    # The payment agent is not hosted: the owner fails its step when the deadline passes,
    # signing as itself, and the inventory agent accepts that and releases the stock.
    keys = Keyring.ephemeral(PARTICIPANTS)
    bus = InMemoryBus()
    hosted = [OWNER, "inventory", "shipping", "projection"]
    async with orders_choreography(keys, bus, participants=hosted, deadline=0.3) as (coordinator, sandbox):
        result = await coordinator.run(order("o-late"))
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.reason is not None and "agent 'payment' gave no answer" in result.reason
    failed = next(e for e in result.events if e.type == "PaymentFailed")
    assert keys.verify(failed) == OWNER
    assert sandbox.effects_for("o-late").outstanding == []


async def test_an_approval_decided_through_the_coordinator_is_accepted() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    sandbox = Sandbox(Scenario.default())
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode="choreography",
            settings=FAST.model_copy(update={"parameters": {"approval_threshold_cents": 1}}),
            keys=keys,
        ) as coordinator,
    ):
        paused = await coordinator.run(order("o-approve"))
        assert paused.status is WorkflowStatus.AWAITING_APPROVAL
        result = await coordinator.approve("o-approve", by="alice")
    assert result.status is WorkflowStatus.COMPLETED
    approved = next(e for e in result.events if e.type == "PaymentApproved")
    assert (approved.source, keys.verify(approved)) == ("person/alice", OWNER)


# -- forged events ------------------------------------------------------------------------


async def test_an_unsigned_order_placed_is_dead_lettered_and_reserves_nothing() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    bus = InMemoryBus()
    forged = SAGA.started("o-forged", order("o-forged"))  # well-formed, but nobody signed it
    async with orders_choreography(keys, bus) as (_, sandbox):
        letters = await refused(bus, forged)
        assert no_effects(sandbox, "o-forged")
    groups = {d.group: d for d in letters}
    assert set(groups) == {"order-fulfilment.inventory", "order-fulfilment.projection"}
    dead = groups["order-fulfilment.inventory"]
    assert dead.deliveries == 1
    assert dead.error == (
        f"UntrustedEvent: OrderPlaced {forged.id} of 'o-forged' (source 'workflow/order-fulfilment') is not signed:"
        " participants act only on events signed by their emitter; publish events through a coordinator process"
        " that holds the emitter's key"
    )


async def test_an_order_placed_signed_by_an_unknown_key_or_altered_after_signing_is_refused() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    impostor = Keyring.ephemeral([OWNER])  # the right name, another key
    bus = InMemoryBus()
    unknown = impostor.sign(SAGA.started("o-impostor", order("o-impostor")), as_=OWNER)
    genuine = keys.sign(SAGA.started("o-altered", order("o-altered")), as_=OWNER)
    altered = genuine.model_copy(update={"data": {**genuine.data, "input": {**order("o-altered"), "country": "FR"}}})
    async with orders_choreography(keys, bus) as (_, sandbox):
        (first, _) = await refused(bus, unknown)
        (second, _) = await refused(bus, altered)
        assert no_effects(sandbox, "o-impostor") and no_effects(sandbox, "o-altered")
    assert f"is signed with key {unknown.signingkey!r}, which is not in the key registry" in first.error
    assert f"has a signature that does not verify with key {genuine.signingkey!r}" in second.error


async def test_an_event_signed_by_the_payment_agent_claiming_to_be_inventory_reserved_is_refused() -> None:
    keys = Keyring.ephemeral(PARTICIPANTS)
    payment_only = keys.trusting(["payment"])  # what a compromised payment worker holds
    bus = InMemoryBus()
    started = keys.sign(SAGA.started("o-claim", order("o-claim")), as_=OWNER)
    reservation = {"reservation_id": "res-1", "total_cents": 240, "currency": "EUR", "lines": []}
    claimed = SAGA.factory.event(
        "InventoryReserved",
        subject="o-claim",
        source="agent/inventory",  # the source claims inventory; the key says payment
        data={"input": order("o-claim"), "results": {"inventory": reservation}, "step": "inventory"},
        cause=started,
    )
    async with orders_choreography(keys, bus) as (_, sandbox):
        letters = await refused(bus, payment_only.sign(claimed, as_="payment"))
        assert no_effects(sandbox, "o-claim")
    dead = next(d for d in letters if d.group == "order-fulfilment.payment")
    assert dead.error == (
        f"UntrustedEvent: InventoryReserved {claimed.id} of 'o-claim' is signed by 'payment'"
        f" (key {keys.key_id('payment')!r}), but only 'inventory' may emit InventoryReserved"
        " in workflow 'order-fulfilment'"
    )
    with pytest.raises(KeyringError, match="holds no private key of 'inventory'"):
        payment_only.sign(claimed, as_="inventory")


# -- malformed events ----------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned-bus"])
async def test_a_payment_failed_without_data_is_dead_lettered_at_once_naming_what_it_lacks(signed: bool) -> None:
    """The issue's case: a well-formed PaymentFailed for an unknown order with empty
    data used to raise KeyError: 'results' five times before being dead-lettered."""
    keys = Keyring.ephemeral(PARTICIPANTS) if signed else None
    bus = InMemoryBus()
    empty = EventFactory(seed=5).event("PaymentFailed", subject="o-nobody", source="agent/payment")
    if keys is not None:
        empty = keys.sign(empty, as_="payment")
    async with orders_choreography(keys, bus) as (_, sandbox):
        letters = await refused(bus, empty)
        assert no_effects(sandbox, "o-nobody")
    (dead,) = [d for d in letters if d.group == "order-fulfilment.inventory"]
    assert dead.deliveries == 1
    assert dead.error == (
        f"MalformedEvent: PaymentFailed {empty.id} of 'o-nobody' from 'agent/payment' cannot be acted on:"
        " data.input is missing or not an object (the workflow input);"
        " data.results is missing or not an object (the results of the steps done);"
        " data.step is None, not 'payment'"
    )


# -- keys on disk ----------------------------------------------------------------------------


def test_keys_are_made_once_in_the_state_directory_private_ones_readable_by_the_owner_only(tmp_path: Path) -> None:
    directory = keys_directory(tmp_path, environ={})
    assert directory == tmp_path / "keys"
    first = Keyring.open(directory)
    key_id = first.ensure_signer("payment")
    assert Keyring.open(directory).ensure_signer("payment") == key_id  # found, not made again
    (private,) = directory.glob("payment.*.key")
    (public,) = directory.glob("payment.*.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    assert private.name == f"{key_id}.key" and public.name == f"{key_id}.pub"
    assert keys_directory(tmp_path, environ={"COORDINATOR_EVENT_KEYS": "/etc/keys"}) == Path("/etc/keys")


def test_a_key_made_by_another_process_is_found_when_its_first_event_arrives(tmp_path: Path) -> None:
    receiver = Keyring.open(tmp_path / "keys")
    receiver.ensure_signer("payment")
    sender = Keyring.open(tmp_path / "keys")  # another process, later
    sender.ensure_signer("inventory")
    event = sender.sign(SAGA.started("o-1", order("o-1")), as_="inventory")
    assert receiver.verify(event) == "inventory"


def test_a_rotated_key_keeps_verifying_what_it_signed_while_its_public_key_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    keyring = Keyring.open(directory)
    old_id = keyring.ensure_signer(OWNER)
    old_event = keyring.sign(SAGA.started("o-1", order("o-1")), as_=OWNER)
    retired = tmp_path / "retired"
    retired.mkdir()
    (directory / f"{old_id}.key").rename(retired / f"{old_id}.key")  # rotate: retire the private half
    rotated = Keyring.open(directory)
    new_id = rotated.ensure_signer(OWNER)
    assert new_id != old_id
    new_event = rotated.sign(SAGA.started("o-2", order("o-2")), as_=OWNER)
    assert rotated.verify(old_event) == rotated.verify(new_event) == OWNER
    (directory / f"{old_id}.pub").unlink()  # nothing it signed is in flight any more
    with pytest.raises(UntrustedEvent, match="not in the key registry"):
        Keyring.open(directory).verify(old_event)


def test_two_private_keys_of_one_participant_are_refused_by_name(tmp_path: Path) -> None:
    first, second = Keyring.open(tmp_path / "a"), Keyring.open(tmp_path / "b")
    one, two = first.ensure_signer("shipping"), second.ensure_signer("shipping")
    os.replace(tmp_path / "b" / f"{two}.key", tmp_path / "a" / f"{two}.key")
    with pytest.raises(KeyringError, match=r"2 private keys of 'shipping' in .*: keep one") as caught:
        Keyring.open(tmp_path / "a")
    assert one in str(caught.value) and two in str(caught.value)


def test_key_material_appears_in_no_event_message_or_repr(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    keyring = Keyring.open(directory)
    keyring.ensure_signer(OWNER)
    secret = next(directory.glob("*.key")).read_text().splitlines()[1]
    public = next(directory.glob("*.pub")).read_text().splitlines()[1]
    event = keyring.sign(SAGA.started("o-1", order("o-1")), as_=OWNER)
    texts = [event.to_json(), repr(keyring)]
    for bad in (event.model_copy(update={"signature": "AAAA"}), event.model_copy(update={"signingkey": "x.1"})):
        with pytest.raises(UntrustedEvent) as caught:
            keyring.verify(bad)
        texts.append(str(caught.value))
    with pytest.raises(KeyringError) as refused_signing:
        keyring.sign(event, as_="payment")
    texts.append(str(refused_signing.value))
    assert not any(secret in text or public in text for text in texts)


def test_a_keys_directory_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match=f"cannot read the keys directory {tmp_path / 'missing'}"):
        Keyring.open(tmp_path / "missing", generate=False)
