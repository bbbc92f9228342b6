"""The sandbox served over HTTP by another process: order tools end to end, a crash
(SIGKILL) and a restart on the same store, and reading its state back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_coordinator.core.app import AppOptions
from agent_coordinator.core.context import ToolCallContext
from agent_coordinator.core.errors import BusinessFailure, InvalidInput
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_fulfilment_app
from agent_coordinator.examples.orders.sandbox import SANDBOX_BASE_URL, RemoteSandboxState, Sandbox, SandboxState
from agent_coordinator.examples.orders.sandbox.__main__ import main
from agent_coordinator.examples.orders.tools import ServiceUrls, order_tools

pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^sandbox listening on (http://\S+) \(store: (.+)\)$")
STARTUP_TIMEOUT_S = 20.0
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}
ITEMS = [{"sku": "SKU-APPLE", "quantity": 2}, {"sku": "SKU-FIG", "quantity": 1}]


class Served:
    """A ``python -m agent_coordinator.examples.orders.sandbox`` process and the URL it announced."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, store: str) -> None:
        self.proc, self.url, self.store = proc, url, store


def read_log(log: Path) -> str:
    return log.read_text()


@asynccontextmanager
async def served(log: Path, *args: str) -> AsyncIterator[Served]:
    """Start the server on a free port, wait for its ready line, kill it on exit.
    Its stderr goes to ``log``."""
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_coordinator.examples.orders.sandbox",
            "--port",
            "0",
            *args,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)
        match = READY.match(line.decode().strip())
        assert match, f"no ready line (got {line!r}); stderr: {read_log(log)}"
        yield Served(proc, match[1], match[2])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def context(order_id: str, step: str, action: str) -> dict[str, Any]:
    return dict(ToolCallContext(order_id, step, action).as_config())


async def place_order(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """Reserve, charge and ship o-1; o-2's card is declined. Returns every answer."""
    tools = order_tools(client=client, urls=ServiceUrls.at(url))
    answers: dict[str, Any] = {
        "reserve": await tools["reserve_stock"].ainvoke(
            {"order_id": "o-1", "items": ITEMS, "currency": "EUR"}, config=context("o-1", "inventory", "reserve_stock")
        ),
        "charge": await tools["charge_payment"].ainvoke(
            {"order_id": "o-1", "amount_cents": 515, "currency": "EUR", "payment_method": "tok_visa"},
            config=context("o-1", "payment", "charge_payment"),
        ),
        "ship": await tools["schedule_shipment"].ainvoke(
            {"order_id": "o-1", "address": ADDRESS, "items": ITEMS},
            config=context("o-1", "shipping", "schedule_shipment"),
        ),
    }
    with pytest.raises(BusinessFailure) as declined:
        await tools["charge_payment"].ainvoke(
            {"order_id": "o-2", "amount_cents": 100, "currency": "EUR", "payment_method": "tok_declined"},
            config=context("o-2", "payment", "charge_payment"),
        )
    answers["declined"] = str(declined.value)
    return answers


def assert_same_state(a: SandboxState, b: SandboxState, orders: tuple[str, ...] = ("o-1", "o-2")) -> None:
    assert dict(a.inventory.stock) == dict(b.inventory.stock)
    assert dict(a.inventory.initial_stock) == dict(b.inventory.initial_stock)
    assert dict(a.inventory.reservations) == dict(b.inventory.reservations)
    for order_id in orders:
        assert a.effects_for(order_id) == b.effects_for(order_id)


@pytest.mark.slow  # a crash test: it SIGKILLs the served sandbox process
async def test_order_tools_against_a_served_sandbox_survive_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "sandbox.db"
    async with httpx.AsyncClient(timeout=10) as client:
        async with served(tmp_path / "server.log", "--store", str(store)) as server:
            assert server.store == str(store)
            answers = await place_order(client, server.url)
            assert answers["reserve"]["status"] == "held"
            assert answers["charge"]["amount_cents"] == 515
            assert answers["ship"]["status"] == "scheduled"
            assert answers["declined"] == "card declined: tok_declined"
            before = await RemoteSandboxState.fetch(client, server.url)
            assert before.inventory.stock["SKU-APPLE"] == 98
            assert before.effects_for("o-1").counts == {
                "reservation:held": 1,
                "charge:captured": 1,
                "shipment:scheduled": 1,
            }
            server.proc.send_signal(signal.SIGKILL)
            assert await server.proc.wait() == -signal.SIGKILL

        async with served(tmp_path / "server.log", "--store", str(store)) as restarted:
            # Every call is answered from the store: same ids, same refusal, no new effect.
            assert await place_order(client, restarted.url) == answers
            after = await RemoteSandboxState.fetch(client, restarted.url)
            assert after == before
            # The served state and the file agree (opening the file while it is served is fine).
            with Sandbox(store=store) as local:
                assert_same_state(after, local)
                assert local.counters["payment"].replays == 2
                assert set(local.counters["payment"].effects_by_key.values()) == {1}
            # SIGTERM stops it cleanly.
            restarted.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(restarted.proc.wait(), 10) == 0


async def test_remote_state_matches_the_in_process_state() -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        answers = await place_order(client, SANDBOX_BASE_URL)
        tools = order_tools(client=client, urls=ServiceUrls.at(SANDBOX_BASE_URL))
        await tools["refund_payment"].ainvoke(
            {"charge_id": answers["charge"]["charge_id"]}, config=context("o-1", "payment", "refund_payment")
        )
        remote = await RemoteSandboxState.fetch(client, SANDBOX_BASE_URL)
    assert_same_state(remote, sandbox)
    assert remote.inventory.unit_prices == sandbox.inventory.unit_prices
    assert remote.inventory.currency == sandbox.inventory.currency == "EUR"
    assert remote.payment.charges == sandbox.payment.charges
    assert remote.shipping.shipments == sandbox.shipping.shipments
    assert remote.inventory.held() == sandbox.inventory.held() == {"SKU-APPLE": 2, "SKU-FIG": 1}
    assert remote.effects_for("o-1").outstanding == sandbox.effects_for("o-1").outstanding
    assert len(remote.effects_for("o-1").outstanding) == 2


async def test_some_orders_state_is_fetched_without_every_record() -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        await place_order(client, SANDBOX_BASE_URL)
        tools = order_tools(client=client, urls=ServiceUrls.at(SANDBOX_BASE_URL))
        await tools["reserve_stock"].ainvoke(
            {"order_id": "o-3", "items": [{"sku": "SKU-PEAR", "quantity": 4}], "currency": "EUR"},
            config=context("o-3", "inventory", "reserve_stock"),
        )
        some = await RemoteSandboxState.fetch(client, SANDBOX_BASE_URL, order_ids=["o-3", "o-9"])
    assert [r.order_id for r in some.inventory.reservations.values()] == ["o-3"]
    assert some.payment.charges == {} and some.shipping.shipments == {}
    # Stock conservation still sees every reservation: the service counts what is held.
    assert some.inventory.held() == sandbox.inventory.held() == {"SKU-APPLE": 2, "SKU-FIG": 1, "SKU-PEAR": 4}
    assert some.effects_for("o-3").counts == {"reservation:held": 1}
    assert some.effects_for("o-9").counts == {} and some.effects_for("o-1").counts == {}
    assert sandbox.effects_for("o-3") == some.effects_for("o-3")


async def test_orders_against_served_services_are_validated_against_their_catalogue(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"catalogue": {"SKU-X": {"name": "X", "unit_price_cents": 5, "stock": 9}}}))
    async with (
        served(tmp_path / "server.log", "--scenario", str(scenario)) as server,
        order_fulfilment_app.environment(AppOptions(services=server.url)) as env,
    ):
        context = env.validation_context
    assert context == {"known_skus": {"SKU-X"}, "catalogue_prices": {"SKU-X": 5}, "catalogue_currency": "EUR"}
    order = {
        "order_id": "o-1",
        "customer": "Ada",
        "items": [{"sku": "SKU-X", "quantity": 2, "unit_price_cents": 1}],
        "payment_method": "tok_visa",
        "shipping_address": ADDRESS,
    }
    with pytest.raises(InvalidInput) as info:
        ORDER_FULFILMENT.validate_input(order, context=context)
    assert info.value.errors == [
        (
            "items.0.unit_price_cents",
            "SKU-X costs 5 cents in the catalogue, not the stated 1; prices come from the catalogue: state 5",
        )
    ]


def test_bad_arguments_exit_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert main(["--scenario", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "cannot read scenario file" in err
    assert str(missing) in err

    store = tmp_path / "sandbox.db"
    Sandbox(store=store).close()
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"seed": 5}')
    assert main(["--store", str(store), "--scenario", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "different scenario (differs in: seed)" in err
    assert str(store) in err


@pytest.mark.parametrize(
    ("base", "check"),
    [
        ("http://127.0.0.1:8700", lambda u: u.inventory == "http://127.0.0.1:8700/inventory"),
        ("http://127.0.0.1:8700/", lambda u: u.payment == "http://127.0.0.1:8700/payment"),
        ("http://host/prefix", lambda u: u.shipping == "http://host/prefix/shipping"),
        (SANDBOX_BASE_URL, lambda u: u == ServiceUrls()),
    ],
)
def test_service_urls_at(base: str, check: Callable[[ServiceUrls], bool]) -> None:
    assert check(ServiceUrls.at(base))
