"""The sandbox services over HTTP: idempotency, stock conservation, refusals, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.examples.orders.sandbox import CatalogueItem, Sandbox, Scenario

ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with sandbox.client() as client:
        yield client


def key(k: str) -> dict[str, str]:
    return {"Idempotency-Key": k}


def reserve_body(order_id: str = "o-1", items: dict[str, int] | None = None) -> dict[str, Any]:
    lines = items or {"SKU-APPLE": 3}
    return {"order_id": order_id, "items": [{"sku": s, "quantity": q} for s, q in lines.items()]}


def charge_body(card: str = "tok_visa", amount: int = 1000) -> dict[str, Any]:
    return {"order_id": "o-1", "amount_cents": amount, "currency": "EUR", "payment_method": card}


def assert_conserved(sandbox: Sandbox) -> None:
    held = sandbox.inventory.held()
    for sku, initial in sandbox.inventory.initial_stock.items():
        available = sandbox.inventory.stock[sku]
        assert available >= 0, sku
        assert available + held.get(sku, 0) == initial, sku


# -- scenario ---------------------------------------------------------------------------


def test_default_scenario_has_catalogue_with_a_sold_out_sku() -> None:
    scenario = Scenario.default()
    assert {"SKU-APPLE", "SKU-PEAR", "SKU-KIWI", "SKU-MANGO", "SKU-FIG", "SKU-SOLDOUT"} <= set(scenario.catalogue)
    assert scenario.catalogue["SKU-SOLDOUT"].stock == 0
    assert scenario.catalogue["SKU-APPLE"].stock == 100
    assert "tok_declined" in scenario.declined_cards
    assert scenario.flaky_cards == {"tok_flaky": 2}
    assert scenario.unshippable_countries == frozenset({"AQ"})


def test_scenario_from_file(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            {
                "catalogue": {"SKU-X": {"name": "X", "unit_price_cents": 5, "stock": 2}},
                "declined_cards": ["tok_nope"],
                "transient_rate": 0.25,
                "seed": 9,
            }
        )
    )
    scenario = Scenario.from_file(path)
    assert scenario.catalogue == {"SKU-X": CatalogueItem(name="X", unit_price_cents=5, stock=2)}
    assert scenario.declined_cards == frozenset({"tok_nope"})
    assert (scenario.transient_rate, scenario.seed) == (0.25, 9)


def test_scenario_from_bad_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"transient_rate": 2, "catalogue": {"SKU-X": {"name": "X", "stock": -1}}}))
    with pytest.raises(InvalidInput) as info:
        Scenario.from_file(path)
    fields = {f for f, _ in info.value.errors}
    assert {"transient_rate", "catalogue.SKU-X.stock", "catalogue.SKU-X.unit_price_cents"} <= fields
    assert "bad.json" in str(info.value)


def test_scenario_from_missing_file() -> None:
    with pytest.raises(InvalidInput, match="cannot read scenario file"):
        Scenario.from_file("/nonexistent/scenario.json")


# -- inventory --------------------------------------------------------------------------


async def test_reserve_and_release_conserve_stock(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/inventory/reservations", json=reserve_body(items={"SKU-APPLE": 3, "SKU-FIG": 2}), headers=key("k1")
    )
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "held"
    assert body["order_id"] == "o-1"
    # Priced from the catalogue (apple 120, fig 275), in its currency.
    assert body["items"] == [
        {"sku": "SKU-APPLE", "quantity": 3, "unit_price_cents": 120},
        {"sku": "SKU-FIG", "quantity": 2, "unit_price_cents": 275},
    ]
    assert (body["total_cents"], body["currency"]) == (3 * 120 + 2 * 275, "EUR")
    assert sandbox.inventory.stock["SKU-APPLE"] == 97
    assert sandbox.inventory.stock["SKU-FIG"] == 98
    assert sandbox.inventory.reservations[body["reservation_id"]].status == "held"
    assert_conserved(sandbox)

    rid = body["reservation_id"]
    r = await client.post(f"/inventory/reservations/{rid}/release", headers=key("k2"))
    assert (r.status_code, r.json()) == (200, {"reservation_id": rid, "status": "released"})
    assert sandbox.inventory.stock["SKU-APPLE"] == 100
    assert sandbox.inventory.stock["SKU-FIG"] == 100
    assert_conserved(sandbox)

    # Releasing again (same key: replay; new key: no-op) returns the same and changes nothing.
    for k in ("k2", "k3"):
        r = await client.post(f"/inventory/reservations/{rid}/release", headers=key(k))
        assert (r.status_code, r.json()) == (200, {"reservation_id": rid, "status": "released"})
    assert sandbox.inventory.stock["SKU-APPLE"] == 100
    assert sandbox.inventory.counters.effects == 2
    assert_conserved(sandbox)


async def test_same_key_twice_is_one_effect(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    first = await client.post("/inventory/reservations", json=reserve_body(), headers=key("o-1/inv/reserve"))
    second = await client.post("/inventory/reservations", json=reserve_body(), headers=key("o-1/inv/reserve"))
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert sandbox.inventory.stock["SKU-APPLE"] == 97
    assert len(sandbox.inventory.reservations) == 1
    counters = sandbox.inventory.counters
    assert (counters.attempts, counters.replays, counters.effects) == (2, 1, 1)
    assert counters.effects_by_key == {"o-1/inv/reserve": 1}


async def test_same_key_with_different_body_is_422(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    await client.post("/inventory/reservations", json=reserve_body(), headers=key("k"))
    r = await client.post("/inventory/reservations", json=reserve_body(items={"SKU-APPLE": 4}), headers=key("k"))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid"
    assert "Idempotency-Key 'k' reused with a different request" in r.json()["reason"]
    assert sandbox.inventory.stock["SKU-APPLE"] == 97


async def test_same_key_on_a_different_route_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/payment/charges", json=charge_body(), headers=key("k"))
    assert r.status_code == 201
    r = await client.post(f"/payment/charges/{r.json()['charge_id']}/refund", headers=key("k"))
    assert r.status_code == 422


async def test_body_key_order_does_not_matter(client: httpx.AsyncClient) -> None:
    body = charge_body()
    await client.post("/payment/charges", json=body, headers=key("k"))
    r = await client.post("/payment/charges", json=dict(reversed(list(body.items()))), headers=key("k"))
    assert r.status_code == 201
    assert r.headers["Idempotent-Replayed"] == "true"


async def test_missing_idempotency_key_is_400(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post("/inventory/reservations", json=reserve_body())
    assert r.status_code == 400
    assert "Idempotency-Key" in r.json()["reason"]
    assert sandbox.inventory.stock["SKU-APPLE"] == 100


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/payment/charges", content=b"{not json", headers=key("k"))
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["reason"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/inventory/reservations",
            {"order_id": "o-1", "items": [{"sku": "SKU-APPLE", "quantity": 0}]},
            "items.0.quantity",
        ),
        ("/inventory/reservations", {"order_id": "o-1", "items": []}, "items"),
        ("/inventory/reservations", {"items": [{"sku": "SKU-APPLE", "quantity": 1}]}, "order_id"),
        ("/payment/charges", {**charge_body(), "amount_cents": 0}, "amount_cents"),
        ("/payment/charges", {**charge_body(), "currency": "eur"}, "currency"),
        ("/payment/charges", {**charge_body(), "tip": 5}, "tip"),
        (
            "/shipping/shipments",
            {"order_id": "o-1", "address": {**ADDRESS, "country": "NLD"}, "items": [{"sku": "A", "quantity": 1}]},
            "address.country",
        ),
        ("/shipping/shipments", {"order_id": "o-1", "address": ADDRESS}, "items"),
    ],
)
async def test_bad_body_is_400_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = await client.post(path, json=body, headers=key("k"))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid"
    assert f"{field}:" in r.json()["reason"]


async def test_invalid_answers_are_not_stored(client: httpx.AsyncClient) -> None:
    # A rejected request did nothing, so the caller may correct it and retry under the same key.
    bad = await client.post("/payment/charges", json={**charge_body(), "amount_cents": -5}, headers=key("k"))
    assert bad.status_code == 400
    good = await client.post("/payment/charges", json=charge_body(), headers=key("k"))
    assert good.status_code == 201


async def test_unknown_sku_is_a_business_refusal(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post("/inventory/reservations", json=reserve_body(items={"SKU-NOPE": 1}), headers=key("k"))
    assert r.status_code == 409
    assert r.json()["error"] == "business"
    assert "unknown SKU 'SKU-NOPE'" in r.json()["reason"]
    assert "SKU-APPLE" in r.json()["reason"]
    assert sandbox.inventory.counters.refusals == 1


async def test_out_of_stock_takes_nothing(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    body = reserve_body(items={"SKU-APPLE": 5, "SKU-SOLDOUT": 1})
    r = await client.post("/inventory/reservations", json=body, headers=key("k"))
    assert r.status_code == 409
    assert r.json() == {"error": "business", "reason": "insufficient stock for SKU-SOLDOUT: wanted 1, available 0"}
    assert sandbox.inventory.stock["SKU-APPLE"] == 100
    assert sandbox.inventory.reservations == {}
    # A business refusal executed: it is stored and replayed for the same key.
    again = await client.post("/inventory/reservations", json=body, headers=key("k"))
    assert (again.status_code, again.json()) == (409, r.json())
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_repeated_sku_lines_are_summed(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    body = {"order_id": "o-1", "items": [{"sku": "SKU-KIWI", "quantity": 60}, {"sku": "SKU-KIWI", "quantity": 60}]}
    r = await client.post("/inventory/reservations", json=body, headers=key("k"))
    assert r.status_code == 409
    assert "wanted 120, available 100" in r.json()["reason"]
    assert sandbox.inventory.stock["SKU-KIWI"] == 100


async def test_release_unknown_reservation_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/inventory/reservations/res_nope/release", headers=key("k"))
    assert r.status_code == 404
    assert "res_nope" in r.json()["reason"]


async def test_listings_and_catalogue(client: httpx.AsyncClient) -> None:
    await client.post("/inventory/reservations", json=reserve_body("o-1"), headers=key("a"))
    await client.post("/inventory/reservations", json=reserve_body("o-2"), headers=key("b"))
    everything = (await client.get("/inventory/reservations")).json()["reservations"]
    assert [r["order_id"] for r in everything] == ["o-1", "o-2"]
    only = (await client.get("/inventory/reservations", params={"order_id": "o-2"})).json()["reservations"]
    assert [r["order_id"] for r in only] == ["o-2"]
    catalogue = {i["sku"]: i for i in (await client.get("/inventory/catalogue")).json()["items"]}
    assert catalogue["SKU-APPLE"]["stock"] == 94
    assert catalogue["SKU-SOLDOUT"]["stock"] == 0


async def test_unknown_route_and_method_answer_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/inventory/nothing")
    assert r.status_code == 404
    assert r.json()["error"] == "invalid"
    r = await client.get("/elsewhere")
    assert r.status_code == 404
    r = await client.delete("/payment/charges")
    assert r.status_code == 405
    assert "allow" in r.headers  # Starlette names the first matching route's methods


# -- payment ----------------------------------------------------------------------------


async def test_charge_and_refund(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post("/payment/charges", json=charge_body(amount=1250), headers=key("c"))
    assert r.status_code == 201
    charge = r.json()
    assert charge["status"] == "captured"
    assert (charge["amount_cents"], charge["currency"], charge["order_id"]) == (1250, "EUR", "o-1")
    cid = charge["charge_id"]
    for k in ("r", "r", "r2"):
        r = await client.post(f"/payment/charges/{cid}/refund", headers=key(k))
        assert (r.status_code, r.json()) == (200, {"charge_id": cid, "status": "refunded", "amount_cents": 1250})
    assert sandbox.payment.charges[cid].status == "refunded"
    assert sandbox.payment.counters.effects == 2
    listed = (await client.get("/payment/charges")).json()["charges"]
    assert [c["status"] for c in listed] == ["refunded"]


async def test_declined_card(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post("/payment/charges", json=charge_body("tok_declined"), headers=key("c"))
    assert (r.status_code, r.json()) == (409, {"error": "business", "reason": "card declined: tok_declined"})
    assert sandbox.payment.charges == {}


async def test_refund_unknown_charge_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/payment/charges/ch_nope/refund", headers=key("k"))
    assert r.status_code == 404


async def test_flaky_card_fails_first_attempts_per_key(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.post("/payment/charges", json=charge_body("tok_flaky"), headers=key("f"))).status_code
        for _ in range(4)
    ]
    assert statuses == [503, 503, 201, 201]
    assert len(sandbox.payment.charges) == 1
    assert sandbox.payment.store.attempts("f") == 4
    assert sandbox.payment.counters.faults == 2
    # A new key starts counting again.
    r = await client.post("/payment/charges", json=charge_body("tok_flaky"), headers=key("g"))
    assert r.status_code == 503
    assert r.json()["error"] == "transient"


# -- shipping ---------------------------------------------------------------------------


async def test_schedule_and_cancel_shipment(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    body = {"order_id": "o-1", "address": ADDRESS, "items": [{"sku": "SKU-APPLE", "quantity": 1}]}
    r = await client.post("/shipping/shipments", json=body, headers=key("s"))
    assert r.status_code == 201
    shipment = r.json()
    assert shipment["status"] == "scheduled"
    assert isinstance(shipment["carrier"], str)
    assert 1 <= shipment["eta_days"] <= 5
    sid = shipment["shipment_id"]
    for k in ("x", "x", "y"):
        r = await client.post(f"/shipping/shipments/{sid}/cancel", headers=key(k))
        assert (r.status_code, r.json()) == (200, {"shipment_id": sid, "status": "cancelled"})
    assert sandbox.shipping.shipments[sid].status == "cancelled"
    assert sandbox.shipping.counters.effects == 2
    assert (await client.post("/shipping/shipments/shp_nope/cancel", headers=key("z"))).status_code == 404


async def test_unshippable_country(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    body = {"order_id": "o-1", "address": {**ADDRESS, "country": "AQ"}, "items": [{"sku": "SKU-APPLE", "quantity": 1}]}
    r = await client.post("/shipping/shipments", json=body, headers=key("s"))
    assert (r.status_code, r.json()) == (409, {"error": "business", "reason": "cannot ship to country AQ"})
    assert sandbox.shipping.shipments == {}


# -- determinism, faults, concurrency ---------------------------------------------------


async def test_ids_derive_from_the_key() -> None:
    ids = []
    for _ in range(2):
        sandbox = Sandbox()
        async with sandbox.client() as client:
            r = await client.post("/inventory/reservations", json=reserve_body(), headers=key("o-9/inv/reserve"))
            ids.append(r.json()["reservation_id"])
    assert ids[0] == ids[1]
    assert ids[0].startswith("res_")


async def _fault_pattern(scenario: Scenario, n: int = 60) -> list[int]:
    sandbox = Sandbox(scenario)
    async with sandbox.client() as client:
        return [
            (await client.post("/payment/charges", json=charge_body(), headers=key(f"o-{i}/pay"))).status_code
            for i in range(n)
        ]


async def test_transient_rate_is_deterministic_per_seed() -> None:
    first = await _fault_pattern(Scenario(transient_rate=0.3, seed=7))
    second = await _fault_pattern(Scenario(transient_rate=0.3, seed=7))
    other = await _fault_pattern(Scenario(transient_rate=0.3, seed=8))
    assert first == second
    assert first != other
    assert 5 < first.count(503) < 35
    assert set(first) == {201, 503}
    assert await _fault_pattern(Scenario(transient_rate=1.0), n=5) == [503] * 5
    assert await _fault_pattern(Scenario(transient_rate=0.0), n=5) == [201] * 5


async def test_transient_faults_are_not_stored() -> None:
    scenario = Scenario(transient_rate=0.5, seed=3)
    sandbox = Sandbox(scenario)
    async with sandbox.client() as client:
        statuses: list[int] = []
        while not statuses or statuses[-1] == 503:
            r = await client.post("/payment/charges", json=charge_body(), headers=key("retry-me"))
            statuses.append(r.status_code)
            assert len(statuses) < 50
    assert statuses[-1] == 201
    assert len(sandbox.payment.charges) == 1
    assert sandbox.payment.counters.effects_by_key == {"retry-me": 1}
    assert all(
        scenario.transient_fault("payment", "retry-me", n) == (status == 503) for n, status in enumerate(statuses, 1)
    )


async def test_concurrent_requests_with_one_key_apply_once() -> None:
    sandbox = Sandbox(Scenario(latency_ms=1))
    async with sandbox.client() as client:
        answers = await asyncio.gather(
            *(client.post("/inventory/reservations", json=reserve_body(), headers=key("same")) for _ in range(20))
        )
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["reservation_id"] for r in answers}) == 1
    assert sandbox.inventory.stock["SKU-APPLE"] == 97
    assert sandbox.inventory.counters.effects == 1


async def test_concurrent_reservations_never_oversell() -> None:
    scenario = Scenario(catalogue={"SKU-RARE": CatalogueItem(name="Rare", unit_price_cents=1, stock=10)})
    sandbox = Sandbox(scenario)
    async with sandbox.client() as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/inventory/reservations", json=reserve_body(f"o-{i}", items={"SKU-RARE": 3}), headers=key(f"k{i}")
                )
                for i in range(10)
            )
        )
    assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 7
    assert sandbox.inventory.stock["SKU-RARE"] == 1
    assert_conserved(sandbox)


async def test_effects_for_summarises_an_order(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    r = await client.post("/inventory/reservations", json=reserve_body("o-1"), headers=key("a"))
    await client.post("/payment/charges", json=charge_body(), headers=key("b"))
    await client.post("/inventory/reservations", json=reserve_body("o-2"), headers=key("c"))
    effects = sandbox.effects_for("o-1")
    assert len(effects.reservations) == 1
    assert len(effects.charges) == 1
    assert effects.shipments == ()
    assert effects.counts == {"reservation:held": 1, "charge:captured": 1}
    assert len(effects.outstanding) == 2
    await client.post(f"/inventory/reservations/{r.json()['reservation_id']}/release", headers=key("d"))
    await client.post(f"/payment/charges/{effects.charges[0].charge_id}/refund", headers=key("e"))
    assert sandbox.effects_for("o-1").outstanding == []
    assert sandbox.request_counts == {"inventory": 3, "payment": 2, "shipping": 0}
    assert sandbox.effect_counts == {"inventory": 3, "payment": 2, "shipping": 0}


def test_client_refuses_a_transport() -> None:
    with pytest.raises(TypeError, match="transport"):
        Sandbox().client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
