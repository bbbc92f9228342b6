"""The HTTP API of ``coordinator serve``, in process (the ASGI app on the test's own
event loop): access by role, submissions and their identity, approvals in the
token's name, filters, the event stream, and the OpenAPI snapshot. The dashboard in
a real browser is tests/process/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.shell.server import create_app, parse_tokens
from agent_coordinator.shell.session import SessionOptions, open_session
from tests.e2e.test_orders_e2e import EXPECTED, example_orders

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "docs" / "openapi.json"
OPERATOR, APPROVER, VIEWER = "op-secret-000000000001", "ap-secret-000000000002", "vw-secret-000000000003"
TOKENS = parse_tokens(f"otto:operator:{OPERATOR} ada:approver:{APPROVER} vic:viewer:{VIEWER}")
WAIT = 30.0


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(params=["orchestration", "choreography"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    options = SessionOptions(
        mode=request.param, state_dir=tmp_path / "state", parameters=(("approval_threshold_cents", "1000"),)
    )
    async with open_session(options) as session:
        app = create_app(session, TOKENS)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            yield http


async def settled(client: httpx.AsyncClient, count: int, **until: str) -> dict[str, str]:
    """Poll the runs list until ``count`` runs have stopped moving (and each run named
    in ``until``, ``o_1002`` for o-1002, has that status); their statuses."""
    async with asyncio.timeout(WAIT):
        while True:
            runs = (await client.get("/runs", headers=auth(VIEWER))).json()["runs"]
            statuses = {r["workflow_id"]: r["status"] for r in runs}
            arrived = all(statuses.get(run.replace("_", "-")) == status for run, status in until.items())
            if len(statuses) == count and "in flight" not in statuses.values() and arrived:
                return statuses
            await asyncio.sleep(0.02)  # the runs go on in the app's background tasks


async def submit_all(client: httpx.AsyncClient) -> dict[str, str]:
    for order in example_orders():
        answer = await client.post("/workflows/order-fulfilment/runs", json=order, headers=auth(OPERATOR))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"workflow_id": order["order_id"], "status": "submitted", "created": True}
    return await settled(client, len(example_orders()))


async def test_runs_start_end_and_wait_for_approval_through_the_api(client: httpx.AsyncClient) -> None:
    statuses = await submit_all(client)
    expected = {k: v.value for k, v in EXPECTED.items()} | {"o-1002": "awaiting_approval"}
    assert statuses == expected
    # The workflow id is the run's identity: submitting it again answers with the same run.
    again = await client.post("/workflows/order-fulfilment/runs", json=example_orders()[0], headers=auth(OPERATOR))
    assert again.status_code == 200 and again.json() == {
        "workflow_id": "o-1001",
        "status": "completed",
        "created": False,
    }
    detail = (await client.get("/runs/o-1004", headers=auth(VIEWER))).json()
    assert detail["status"] == "compensated" and "card declined" in detail["reason"]
    assert [s["status"] for s in detail["steps"]] == ["compensated", "failed", "pending"]
    assert [e["type"] for e in detail["timeline"]] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert detail["usage"]["model_calls"] >= 2
    waiting = (await client.get("/runs/o-1002", headers=auth(VIEWER))).json()
    assert waiting["approval"]["step"] == "payment" and "1000 cents" in waiting["approval"]["reason"]


async def test_an_approval_is_recorded_in_the_token_holders_name(client: httpx.AsyncClient) -> None:
    await submit_all(client)
    refused = await client.post("/runs/o-1002/approve", json={"note": "ok"}, headers=auth(OPERATOR))
    assert refused.status_code == 403 and refused.json()["detail"] == "otto lacks the role 'approver'"
    accepted = await client.post("/runs/o-1002/approve", json={"note": "called the customer"}, headers=auth(APPROVER))
    assert accepted.status_code == 202 and accepted.json() == {"workflow_id": "o-1002", "action": "approve"}
    assert (await settled(client, 8, o_1002="completed"))["o-1002"] == "completed"
    timeline = (await client.get("/runs/o-1002", headers=auth(VIEWER))).json()["timeline"]
    approved = next(e for e in timeline if e["type"] == "PaymentApproved")
    assert approved["by"] == "ada"
    events = (await client.get("/runs/o-1002/events", headers=auth(VIEWER))).json()
    assert next(e for e in events if e["type"] == "PaymentApproved")["data"]["note"] == "called the customer"
    twice = await client.post("/runs/o-1002/approve", json={}, headers=auth(APPROVER))
    assert twice.status_code == 409 and "waits for no approval" in twice.json()["detail"]


async def test_bad_requests_are_named_and_change_nothing(client: httpx.AsyncClient) -> None:
    no_token = await client.get("/runs")
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/runs", headers=auth("not-a-token"))).status_code == 401
    viewer_submits = await client.post("/workflows/order-fulfilment/runs", json={}, headers=auth(VIEWER))
    assert viewer_submits.status_code == 403
    bad = dict(example_orders()[0], items=[{"sku": "SKU-DURIAN", "quantity": 1, "unit_price_cents": 100}])
    invalid = await client.post("/workflows/order-fulfilment/runs", json=bad, headers=auth(OPERATOR))
    assert invalid.status_code == 422 and "unknown SKU 'SKU-DURIAN'" in invalid.json()["detail"]
    unknown = await client.post("/workflows/travel/runs", json={}, headers=auth(OPERATOR))
    assert unknown.status_code == 404 and "this server runs 'order-fulfilment'" in unknown.json()["detail"]
    key = {"Idempotency-Key": "batch-7"}
    first = await client.post(
        "/workflows/order-fulfilment/runs", json=example_orders()[0], headers=auth(OPERATOR) | key
    )
    assert first.status_code == 202
    other = await client.post(
        "/workflows/order-fulfilment/runs", json=example_orders()[1], headers=auth(OPERATOR) | key
    )
    assert other.status_code == 409 and "already started run 'o-1001'" in other.json()["detail"]
    assert (await client.get("/runs/o-9999", headers=auth(VIEWER))).status_code == 404
    assert await settled(client, 1) == {"o-1001": "completed"}  # the refused ones started nothing
    for answer in (no_token, viewer_submits, invalid, other):
        assert not any(secret in answer.text for secret in (OPERATOR, APPROVER, VIEWER))


async def test_the_runs_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    await submit_all(client)
    compensated = (await client.get("/runs?status=compensated", headers=auth(VIEWER))).json()
    assert [r["workflow_id"] for r in compensated["runs"]] == ["o-1003", "o-1004", "o-1005"]
    page = (await client.get("/runs?limit=2&offset=1", headers=auth(VIEWER))).json()
    assert page["total"] == 8 and [r["workflow_id"] for r in page["runs"]] == ["o-1002", "o-1003"]
    other_mode = "choreography" if compensated["runs"][0]["mode"] == "orchestration" else "orchestration"
    assert (await client.get(f"/runs?mode={other_mode}", headers=auth(VIEWER))).json()["total"] == 0


async def test_a_runs_events_stream_as_server_sent_events_until_it_ends(client: httpx.AsyncClient) -> None:
    await submit_all(client)
    async with client.stream("GET", "/runs/o-1004/events/stream", headers=auth(VIEWER)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in stream.aiter_text()])
    kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert kinds == ["OrderPlaced", "InventoryReserved", "PaymentFailed", "InventoryReleased", "OrderCancelled"]
    data = [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]
    assert {d["subject"] for d in data} == {"o-1004"}


async def test_the_openapi_schema_matches_its_committed_snapshot(client: httpx.AsyncClient) -> None:
    schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    schema["info"]["description"] = "(the workflow and mode served)"  # the one part that depends on the session
    assert schema == json.loads(SNAPSHOT.read_text()), (
        "the API changed: look at the difference, then write the new schema to docs/openapi.json "
        "(python -m tests.e2e.test_server_api)"
    )


async def test_metrics_are_read_from_the_event_log(client: httpx.AsyncClient) -> None:
    await submit_all(client)
    assert (await client.get("/metrics")).status_code == 401
    text = (await client.get("/metrics", headers=auth(VIEWER))).text
    mode = (await client.get("/runs/o-1001", headers=auth(VIEWER))).json()["mode"]
    for status, count in (("completed", 4), ("compensated", 3), ("awaiting_approval", 1)):
        line = f'coordinator_runs{{mode="{mode}",status="{status}",workflow="order-fulfilment"}} {count}.0'
        assert line in text, status
    assert 'coordinator_step_seconds_count{outcome="failed",step="payment",workflow="order-fulfilment"} 1.0' in text
    assert (
        'coordinator_compensations_total{outcome="compensated",step="inventory",workflow="order-fulfilment"} 2.0'
        in text
    )
    assert 'coordinator_events_total{type="OrderPlaced",workflow="order-fulfilment"} 8.0' in text
    assert 'coordinator_tokens_total{kind="input",step="payment",workflow="order-fulfilment"}' in text


def test_tokens_that_are_malformed_are_named_without_their_secret() -> None:
    with pytest.raises(CoordinatorError, match=r"entry 1 \(ada\) is not NAME:ROLE"):
        parse_tokens("ada:approver")
    with pytest.raises(CoordinatorError, match=r"entry 2 \(bob\) has unknown roles \['admin'\]") as raised:
        parse_tokens("ada:viewer:aaaaaaaaaaaaaaaaaaaa bob:admin:bbbbbbbbbbbbbbbbbbbb")
    assert "bbbb" not in str(raised.value)
    with pytest.raises(CoordinatorError, match="at least 16 characters"):
        parse_tokens("ada:viewer:short")
    (token,) = parse_tokens("ada:approver:cccccccccccccccccccc")
    assert token.roles == {"approver", "viewer"} and "cccc" not in repr(token)


async def _write_snapshot() -> None:
    async with open_session(SessionOptions(state_dir=Path("/tmp/openapi-snapshot"))) as session:
        schema = create_app(session, TOKENS).openapi()
    schema["info"]["description"] = "(the workflow and mode served)"
    SNAPSHOT.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(_write_snapshot())
