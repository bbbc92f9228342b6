"""The sandbox's state in a SQLite store: it survives reopening and is shared by writers."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.examples.orders.sandbox import CatalogueItem, Sandbox, Scenario

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}


def key(k: str) -> dict[str, str]:
    return {"Idempotency-Key": k}


def reserve_body(order_id: str = "o-1", items: dict[str, int] | None = None) -> dict[str, Any]:
    lines = items or {"SKU-APPLE": 3}
    return {"order_id": order_id, "items": [{"sku": s, "quantity": q} for s, q in lines.items()]}


def charge_body(order_id: str = "o-1", card: str = "tok_visa", amount: int = 1000) -> dict[str, Any]:
    return {"order_id": order_id, "amount_cents": amount, "currency": "EUR", "payment_method": card}


def ship_body(order_id: str = "o-1") -> dict[str, Any]:
    return {"order_id": order_id, "address": ADDRESS, "items": [{"sku": "SKU-APPLE", "quantity": 3}]}


def records(sandbox: Sandbox) -> dict[str, list[dict[str, Any]]]:
    return {
        "reservations": [r.to_dict() for r in sandbox.inventory.reservations.values()],
        "charges": [c.to_dict() for c in sandbox.payment.charges.values()],
        "shipments": [s.to_dict() for s in sandbox.shipping.shipments.values()],
    }


def durable_counters(sandbox: Sandbox) -> dict[str, tuple[int, int, int, int, int, dict[str, int]]]:
    return {
        name: (c.attempts, c.replays, c.faults, c.refusals, c.effects, c.effects_by_key)
        for name, c in sandbox.counters.items()
    }


def assert_conserved(sandbox: Sandbox) -> None:
    held = sandbox.inventory.held()
    for sku, initial in sandbox.inventory.initial_stock.items():
        assert sandbox.inventory.stock[sku] + held.get(sku, 0) == initial, sku


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "sandbox.db"


@pytest.fixture
def opened() -> Iterator[list[Sandbox]]:
    """Sandboxes a test opens; closed at the end."""
    sandboxes: list[Sandbox] = []
    yield sandboxes
    for sandbox in sandboxes:
        sandbox.close()


def open_sandbox(opened: list[Sandbox], store: Path, scenario: Scenario | None = None) -> Sandbox:
    sandbox = Sandbox(scenario, store=store)
    opened.append(sandbox)
    return sandbox


async def test_state_survives_reopening(store: Path, opened: list[Sandbox]) -> None:
    first = open_sandbox(opened, store)
    async with first.client() as client:
        reserved = await client.post("/inventory/reservations", json=reserve_body(), headers=key("o-1/inv"))
        charged = await client.post("/payment/charges", json=charge_body(), headers=key("o-1/pay"))
        shipped = await client.post("/shipping/shipments", json=ship_body(), headers=key("o-1/ship"))
        refused = await client.post("/payment/charges", json=charge_body("o-2", "tok_declined"), headers=key("o-2/pay"))
        other = await client.post(
            "/inventory/reservations", json=reserve_body("o-3", {"SKU-FIG": 2}), headers=key("o-3")
        )
        rid3 = other.json()["reservation_id"]
        await client.post(f"/inventory/reservations/{rid3}/release", headers=key("o-3/undo"))
    assert [r.status_code for r in (reserved, charged, shipped, refused)] == [201, 201, 201, 409]
    before = records(first), dict(first.inventory.stock), durable_counters(first)
    first.close()

    second = open_sandbox(opened, store)
    assert second.store_path == store
    assert (records(second), second.inventory.stock, durable_counters(second)) == before
    assert second.inventory.stock["SKU-APPLE"] == 97
    assert second.inventory.stock["SKU-FIG"] == 100
    assert second.effects_for("o-1").counts == {"reservation:held": 1, "charge:captured": 1, "shipment:scheduled": 1}
    assert second.counters["inventory"].requests == second.counters["inventory"].attempts == 3

    async with second.client() as client:
        # Stored answers replay after reopening, success and refusal alike, and make no effect.
        for path, body, k, first_answer in (
            ("/inventory/reservations", reserve_body(), "o-1/inv", reserved),
            ("/payment/charges", charge_body(), "o-1/pay", charged),
            ("/shipping/shipments", ship_body(), "o-1/ship", shipped),
            ("/payment/charges", charge_body("o-2", "tok_declined"), "o-2/pay", refused),
        ):
            again = await client.post(path, json=body, headers=key(k))
            assert (again.status_code, again.json()) == (first_answer.status_code, first_answer.json())
            assert again.headers["Idempotent-Replayed"] == "true"
        # The stored fingerprint still guards the key.
        changed = await client.post(
            "/inventory/reservations", json=reserve_body(items={"SKU-PEAR": 1}), headers=key("o-1/inv")
        )
        assert changed.status_code == 422
        catalogue = {i["sku"]: i for i in (await client.get("/inventory/catalogue")).json()["items"]}
    assert (catalogue["SKU-APPLE"]["stock"], catalogue["SKU-APPLE"]["initial_stock"]) == (97, 100)
    assert records(second) == before[0]
    assert second.inventory.stock == before[1]
    assert second.counters["payment"].effects_by_key == {"o-1/pay": 1}
    assert second.counters["payment"].replays == 2
    assert_conserved(second)


async def test_release_after_reopening_returns_stock_once(store: Path, opened: list[Sandbox]) -> None:
    first = open_sandbox(opened, store)
    async with first.client() as client:
        reserved = await client.post("/inventory/reservations", json=reserve_body(), headers=key("res"))
    rid = reserved.json()["reservation_id"]
    first.close()

    second = open_sandbox(opened, store)
    async with second.client() as client:
        for k in ("rel", "rel", "rel-again"):
            r = await client.post(f"/inventory/reservations/{rid}/release", headers=key(k))
            assert (r.status_code, r.json()) == (200, {"reservation_id": rid, "status": "released"})
    assert second.inventory.stock["SKU-APPLE"] == 100
    assert second.counters["inventory"].effects_by_key == {"res": 1, "rel": 1}
    second.close()

    third = open_sandbox(opened, store)
    assert third.inventory.stock["SKU-APPLE"] == 100
    assert third.inventory.reservations[rid].status == "released"
    assert_conserved(third)


async def test_attempt_counts_survive_reopening(store: Path, opened: list[Sandbox]) -> None:
    # tok_flaky fails the first 2 attempts of each key: the count carries across processes.
    first = open_sandbox(opened, store)
    async with first.client() as client:
        r = await client.post("/payment/charges", json=charge_body(card="tok_flaky"), headers=key("f"))
        assert r.status_code == 503
    first.close()
    second = open_sandbox(opened, store)
    assert second.payment.store.attempts("f") == 1
    async with second.client() as client:
        statuses = [
            (await client.post("/payment/charges", json=charge_body(card="tok_flaky"), headers=key("f"))).status_code
            for _ in range(2)
        ]
    assert statuses == [503, 201]
    assert second.payment.counters.faults == 2


def test_the_stored_scenario_wins_and_a_different_one_is_refused(store: Path, opened: list[Sandbox]) -> None:
    scenario = Scenario(catalogue={"SKU-X": CatalogueItem(name="X", unit_price_cents=5, stock=2)}, seed=3)
    open_sandbox(opened, store, scenario).close()
    assert open_sandbox(opened, store).scenario == scenario
    assert open_sandbox(opened, store, scenario).inventory.stock == {"SKU-X": 2}
    with pytest.raises(InvalidInput, match="different scenario") as info:
        Sandbox(Scenario.default(), store=store)
    assert str(store) in str(info.value)
    assert "catalogue" in str(info.value)
    assert "seed" in str(info.value)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InvalidInput, match="is not a sandbox store") as info:
        Sandbox(store=junk)
    assert str(junk) in str(info.value)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(InvalidInput, match="holds other tables"):
        Sandbox(store=other)


def test_without_a_store_nothing_is_written() -> None:
    sandbox = Sandbox()
    assert sandbox.db is None
    assert sandbox.store_path is None
    sandbox.reload()  # no-op
    sandbox.close()  # no-op


async def test_a_failed_write_answers_nothing_and_keeps_memory_equal_to_the_file(
    store: Path, opened: list[Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = open_sandbox(opened, store)
    assert sandbox.db is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sandbox.db, "save_key", broken)
    async with sandbox.client() as client:
        with pytest.raises(sqlite3.OperationalError):
            await client.post("/inventory/reservations", json=reserve_body(), headers=key("k"))
    assert sandbox.inventory.stock["SKU-APPLE"] == 100
    assert sandbox.inventory.reservations == {}
    assert sandbox.inventory.counters.effects_by_key == {}
    monkeypatch.undo()
    async with sandbox.client() as client:
        r = await client.post("/inventory/reservations", json=reserve_body(), headers=key("k"))
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers
    assert sandbox.inventory.stock["SKU-APPLE"] == 97


async def test_two_sandboxes_on_one_store_share_writes(store: Path, opened: list[Sandbox]) -> None:
    scenario = Scenario(catalogue={"SKU-RARE": CatalogueItem(name="Rare", unit_price_cents=1, stock=10)})
    one = open_sandbox(opened, store, scenario)
    two = open_sandbox(opened, store)
    async with one.client() as a, two.client() as b:
        first = await a.post("/inventory/reservations", json=reserve_body("o-1", {"SKU-RARE": 6}), headers=key("k1"))
        assert first.status_code == 201
        # ``two`` re-reads the stock it moves: only 4 are left.
        short = await b.post("/inventory/reservations", json=reserve_body("o-2", {"SKU-RARE": 5}), headers=key("k2"))
        assert short.json()["reason"] == "insufficient stock for SKU-RARE: wanted 5, available 4"
        # ... and the keys the other one answered: a replay, not a second effect.
        again = await b.post("/inventory/reservations", json=reserve_body("o-1", {"SKU-RARE": 6}), headers=key("k1"))
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        # ... and the records the other one made: it can release them, once.
        rid = first.json()["reservation_id"]
        released = await b.post(f"/inventory/reservations/{rid}/release", headers=key("k3"))
        assert released.status_code == 200
        released_again = await a.post(f"/inventory/reservations/{rid}/release", headers=key("k4"))
        assert released_again.status_code == 200
    assert one.inventory.stock["SKU-RARE"] == two.inventory.stock["SKU-RARE"] == 10
    assert one.inventory.counters.effects_by_key == {"k1": 1}  # k4 found it released: no effect
    one.reload()
    assert records(one) == records(two)
    assert one.inventory.counters.effects_by_key == {"k1": 1, "k3": 1}
    two.reload()  # it has not seen k4's attempt yet
    assert durable_counters(one) == durable_counters(two) == durable_counters(open_sandbox(opened, store))
    assert_conserved(one)


_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from agent_coordinator.examples.orders.sandbox import Sandbox

    async def main(store, worker):
        sandbox = Sandbox(store=store)
        body = lambda i: {"order_id": f"o-{worker}-{i}", "items": [{"sku": "SKU-RARE", "quantity": 1}]}
        async with sandbox.client() as client:
            statuses = []
            for i in range(25):
                headers = {"Idempotency-Key": f"{worker}-{i}"}
                r = await client.post("/inventory/reservations", json=body(i), headers=headers)
                statuses.append(r.status_code)
                # a key both workers share: one effect between them
                r = await client.post("/payment/charges", headers={"Idempotency-Key": f"shared-{i}"},
                    json={"order_id": f"s-{i}", "amount_cents": 1, "currency": "EUR", "payment_method": "tok_visa"})
                statuses.append(r.status_code)
        sandbox.close()
        print(json.dumps(statuses))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow  # processes of its own writing one store
async def test_writers_in_several_processes_never_oversell(store: Path, opened: list[Sandbox]) -> None:
    scenario = Scenario(catalogue={"SKU-RARE": CatalogueItem(name="Rare", unit_price_cents=1, stock=30)})
    open_sandbox(opened, store, scenario).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(store), worker, stdout=subprocess.PIPE, cwd=ROOT, env=env
        )
        for worker in ("a", "b")
    ]
    outputs = [await asyncio.wait_for(proc.communicate(), 30) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    statuses = [s for out, _ in outputs for s in json.loads(out)]
    assert statuses.count(201) == 30 + 50  # 30 reservations; 25 charges answered twice (once a replay)
    assert statuses.count(409) == 20

    after = open_sandbox(opened, store)
    assert after.inventory.stock["SKU-RARE"] == 0
    assert len(after.inventory.reservations) == 30
    assert len(after.payment.charges) == 25
    assert set(after.payment.counters.effects_by_key.values()) == {1}
    assert after.payment.counters.replays == 25
    assert_conserved(after)
