"""The order model, the HTTP seam (call_service) and the six order tools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from agent_coordinator.core.context import ToolCallContext
from agent_coordinator.core.errors import BusinessFailure, InvalidArguments, StepError, TransientFailure
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.examples.orders.tools import Order, OrderItem, ServiceUrls, order_tools
from agent_coordinator.tools.http import call_service

CTX = ToolCallContext("o-1", "payment", "charge_payment")
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Utrecht", "postcode": "3511", "country": "NL"}
ITEMS = [{"sku": "SKU-APPLE", "quantity": 2}, {"sku": "SKU-FIG", "quantity": 1}]


def order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "customer": "Ada",
        "items": [
            {"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120},
            {"sku": "SKU-FIG", "quantity": 1, "unit_price_cents": 275},
        ],
        "payment_method": "tok_visa",
        "shipping_address": ADDRESS,
    }
    data.update(overrides)
    return data


def config(step: str, action: str, order_id: str = "o-1") -> Any:
    return ToolCallContext(order_id, step, action).as_config()


# -- the order model --------------------------------------------------------------------


def test_order_total_and_defaults() -> None:
    order = Order.model_validate(order_data())
    assert order.total_cents == 2 * 120 + 275
    assert order.currency == "EUR"
    dumped = order.model_dump(mode="json")
    assert dumped["total_cents"] == 515
    assert Order.model_validate(dumped) == order  # a dump validates back


def test_order_rejects_a_wrong_total() -> None:
    with pytest.raises(ValidationError, match="total_cents 1 does not match the items' total 515"):
        Order.model_validate({**order_data(), "total_cents": 1})


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            order_data(items=[{"sku": "SKU-APPLE", "quantity": -1, "unit_price_cents": 1}]),
            ("items", 0, "quantity"),
            "greater than 0",
        ),
        (order_data(items=[]), ("items",), "at least 1 item"),
        ({k: v for k, v in order_data().items() if k != "shipping_address"}, ("shipping_address",), "Field required"),
        (order_data(currency="eur"), ("currency",), "must be written in capitals: 'EUR'"),
        (order_data(shipping_address={**ADDRESS, "country": "nl"}), ("shipping_address", "country"), "pattern"),
        (order_data(order_id=""), ("order_id",), "at least 1 character"),
        (order_data(order_id="a/b"), ("order_id",), "contains '/' (U+002F) at position 1"),
        (order_data(coupon="FREE"), ("coupon",), "Extra inputs"),
    ],
)
def test_order_validation_names_the_field(data: dict[str, Any], field: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Order.model_validate(data)
    errors = {tuple(e["loc"]): e["msg"] for e in info.value.errors()}
    assert field in errors, errors
    assert message in errors[field]


def test_unknown_sku_is_rejected_when_the_catalogue_is_known() -> None:
    data = order_data(items=[{"sku": "SKU-DURIAN", "quantity": 1, "unit_price_cents": 1}])
    with pytest.raises(ValidationError) as info:
        Order.model_validate(data, context={"known_skus": {"SKU-APPLE", "SKU-FIG"}})
    (error,) = info.value.errors()
    assert error["loc"] == ("items", 0, "sku")
    assert "unknown SKU 'SKU-DURIAN'; known SKUs: SKU-APPLE, SKU-FIG" in error["msg"]
    # Without a catalogue in the context any SKU is accepted; a known one always is.
    assert Order.model_validate(data).items[0].sku == "SKU-DURIAN"
    OrderItem.model_validate(
        {"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 1}, context={"known_skus": ["SKU-APPLE"]}
    )


def test_service_urls_strip_trailing_slash() -> None:
    assert ServiceUrls(inventory="http://inv/").inventory == "http://inv"
    assert ServiceUrls().payment == "http://sandbox/payment"


# -- call_service: the HTTP seam --------------------------------------------------------


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://svc")


async def test_call_service_sends_the_key_and_returns_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "x1"})

    async with mock_client(handler) as client:
        result = await call_service(client, "POST", "/things", json={"a": 1}, context=CTX, timeout=1.5)
    assert result == {"id": "x1"}
    assert seen[0].headers["Idempotency-Key"] == "o-1/payment/charge_payment"
    assert seen[0].content == b'{"a":1}'
    assert seen[0].extensions["timeout"]["read"] == 1.5


async def test_call_service_no_content_is_an_empty_result() -> None:
    async with mock_client(lambda r: httpx.Response(204)) as client:
        assert await call_service(client, "POST", "/x", json=None, context=CTX) == {}


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (409, {"error": "business", "reason": "card declined: tok_x"}, BusinessFailure, "card declined: tok_x"),
        (402, {"reason": "insufficient funds"}, BusinessFailure, "insufficient funds"),
        (422, {"error": "business", "reason": "over limit"}, BusinessFailure, "over limit"),
        (422, {"error": "invalid", "reason": "key reused"}, InvalidArguments, "key reused"),
        (400, {"error": "invalid", "reason": "amount_cents: must be > 0"}, InvalidArguments, "amount_cents"),
        (404, {"error": "invalid", "reason": "no charge 'ch_1'"}, InvalidArguments, "no charge 'ch_1'"),
        (403, None, InvalidArguments, "POST http://svc/x answered 403"),
        (429, None, TransientFailure, "POST http://svc/x answered 429"),
        (500, None, TransientFailure, "POST http://svc/x answered 500"),
        (503, {"error": "transient", "reason": "busy"}, TransientFailure, "POST http://svc/x answered 503: busy"),
    ],
)
async def test_call_service_maps_statuses(
    status: int, body: dict[str, Any] | None, error: type[StepError], message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="nope")

    async with mock_client(handler) as client:
        with pytest.raises(error) as info:
            await call_service(client, "POST", "/x", json={}, context=CTX)
    assert type(info.value) is error
    assert message in str(info.value)
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (httpx.ReadTimeout("slow"), "POST http://svc/x timed out"),
        (httpx.ConnectError("refused"), "POST http://svc/x failed in transport"),
        (httpx.RemoteProtocolError("reset"), "POST http://svc/x failed in transport"),
    ],
)
async def test_call_service_transport_errors_are_transient(exc: httpx.HTTPError, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with mock_client(handler) as client:
        with pytest.raises(TransientFailure, match=message) as info:
            await call_service(client, "POST", "/x", json={}, context=CTX)
    assert info.value.__cause__ is exc


async def test_call_service_success_without_a_json_object_is_transient() -> None:
    async with mock_client(lambda r: httpx.Response(200, text="<html>")) as client:
        with pytest.raises(TransientFailure, match="without a JSON object body"):
            await call_service(client, "GET", "/x", json=None, context=CTX)


# -- the tools against the sandbox ------------------------------------------------------


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
async def tools(sandbox: Sandbox) -> AsyncIterator[dict[str, BaseTool]]:
    async with sandbox.client() as client:
        yield order_tools(client=client)


def charge_args(card: str = "tok_visa") -> dict[str, Any]:
    return {"order_id": "o-1", "amount_cents": 515, "currency": "EUR", "payment_method": card}


def test_six_tools_with_closed_schemas(tools: dict[str, BaseTool]) -> None:
    assert set(tools) == {
        "reserve_stock",
        "release_stock",
        "charge_payment",
        "refund_payment",
        "schedule_shipment",
        "cancel_shipment",
    }
    for name, tool in tools.items():
        assert tool.name == name
        assert tool.description
        assert isinstance(tool.args_schema, type)
        assert issubclass(tool.args_schema, BaseModel)
        assert tool.args_schema.model_config.get("extra") == "forbid"
        schema = tool.tool_call_schema
        assert isinstance(schema, type)
        assert issubclass(schema, BaseModel)
        assert "config" not in schema.model_json_schema()["properties"]  # injected, never shown to a model


async def test_saga_forward_and_back(sandbox: Sandbox, tools: dict[str, BaseTool]) -> None:
    reservation = await tools["reserve_stock"].ainvoke(
        {"order_id": "o-1", "items": ITEMS, "currency": "EUR"}, config=config("inventory", "reserve_stock")
    )
    charge = await tools["charge_payment"].ainvoke(charge_args(), config=config("payment", "charge_payment"))
    shipment = await tools["schedule_shipment"].ainvoke(
        {"order_id": "o-1", "address": ADDRESS, "items": ITEMS}, config=config("shipping", "schedule_shipment")
    )
    assert reservation["status"] == "held"
    assert (reservation["total_cents"], reservation["currency"]) == (2 * 120 + 275, "EUR")  # the catalogue's prices
    assert charge["status"] == "captured"
    assert charge["amount_cents"] == 515
    assert shipment["status"] == "scheduled"
    # The context reached the service as the idempotency key.
    held = sandbox.inventory.reservations[reservation["reservation_id"]]
    assert held.idempotency_key == "o-1/inventory/reserve_stock"
    assert len(sandbox.effects_for("o-1").outstanding) == 3

    undo = [
        ("cancel_shipment", {"shipment_id": shipment["shipment_id"]}, "cancelled"),
        ("refund_payment", {"charge_id": charge["charge_id"]}, "refunded"),
        ("release_stock", {"reservation_id": reservation["reservation_id"]}, "released"),
    ]
    for name, args, status in undo:
        assert (await tools[name].ainvoke(args, config=config("undo", name)))["status"] == status
    assert sandbox.effects_for("o-1").outstanding == []
    assert sandbox.inventory.stock["SKU-APPLE"] == 100


async def test_retried_call_does_not_repeat_the_effect(sandbox: Sandbox, tools: dict[str, BaseTool]) -> None:
    cfg = config("payment", "charge_payment")
    first = await tools["charge_payment"].ainvoke(charge_args(), config=cfg)
    second = await tools["charge_payment"].ainvoke(charge_args(), config=cfg)
    assert first == second
    assert len(sandbox.payment.charges) == 1


async def test_flaky_card_is_transient_twice_then_succeeds(sandbox: Sandbox, tools: dict[str, BaseTool]) -> None:
    cfg = config("payment", "charge_payment")
    for attempt in (1, 2):
        with pytest.raises(TransientFailure, match=f"503.*attempt {attempt}"):
            await tools["charge_payment"].ainvoke(charge_args("tok_flaky"), config=cfg)
    result = await tools["charge_payment"].ainvoke(charge_args("tok_flaky"), config=cfg)
    assert result["status"] == "captured"
    assert sandbox.payment.counters.effects == 1


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("charge_payment", charge_args("tok_declined"), "card declined: tok_declined"),
        (
            "schedule_shipment",
            {"order_id": "o-1", "address": {**ADDRESS, "country": "AQ"}, "items": ITEMS},
            "cannot ship to country AQ",
        ),
        (
            "reserve_stock",
            {"order_id": "o-1", "items": [{"sku": "SKU-NOPE", "quantity": 1}], "currency": "EUR"},
            "unknown SKU 'SKU-NOPE'",
        ),
        (
            "reserve_stock",
            {"order_id": "o-1", "items": [{"sku": "SKU-SOLDOUT", "quantity": 2}], "currency": "EUR"},
            "insufficient stock for SKU-SOLDOUT: wanted 2, available 0",
        ),
        (
            "reserve_stock",
            {"order_id": "o-1", "items": ITEMS, "currency": "USD"},
            "the catalogue prices in EUR, not USD; order in EUR",
        ),
    ],
)
async def test_business_refusals(tools: dict[str, BaseTool], name: str, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(BusinessFailure) as info:
        await tools[name].ainvoke(args, config=config("step", name))
    assert reason in info.value.reason


async def test_wrong_id_is_invalid_and_can_be_corrected(tools: dict[str, BaseTool]) -> None:
    charge = await tools["charge_payment"].ainvoke(charge_args(), config=config("payment", "charge_payment"))
    cfg = config("payment", "refund_payment")
    with pytest.raises(InvalidArguments, match="no charge 'ch_wrong'"):
        await tools["refund_payment"].ainvoke({"charge_id": "ch_wrong"}, config=cfg)
    # Re-asked, the model fixes the id; the same key works because the 404 was not stored.
    refund = await tools["refund_payment"].ainvoke({"charge_id": charge["charge_id"]}, config=cfg)
    assert refund["status"] == "refunded"


async def test_ids_cannot_escape_their_path_segment(sandbox: Sandbox, tools: dict[str, BaseTool]) -> None:
    await tools["charge_payment"].ainvoke(charge_args(), config=config("payment", "charge_payment"))
    with pytest.raises(InvalidArguments, match="Not Found"):
        await tools["release_stock"].ainvoke(
            {"reservation_id": "../../payment/charges"}, config=config("inventory", "release_stock")
        )
    assert sandbox.request_counts["payment"] == 1
    assert sandbox.payment.counters.attempts == 1


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("charge_payment", {**charge_args(), "tip": 5}, "tip: Extra inputs are not permitted"),
        ("charge_payment", {k: v for k, v in charge_args().items() if k != "currency"}, "currency: Field required"),
        ("charge_payment", {**charge_args(), "amount_cents": 0}, "amount_cents: Input should be greater than 0"),
        (
            "reserve_stock",
            {"order_id": "o-1", "items": [{"sku": "SKU-APPLE", "quantity": 1, "unit_price_cents": 5}]},
            "items.0.unit_price_cents: Extra inputs",
        ),
        ("reserve_stock", {"order_id": "o-1", "items": []}, "items: List should have at least 1 item"),
        ("schedule_shipment", {"order_id": "o-1", "items": ITEMS}, "address: Field required"),
        ("release_stock", {}, "reservation_id: Field required"),
    ],
)
async def test_arguments_failing_the_schema_are_invalid(
    sandbox: Sandbox, tools: dict[str, BaseTool], name: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArguments) as info:
        await tools[name].ainvoke(args, config=config("step", name))
    assert f"invalid arguments for {name}" in str(info.value)
    assert field in str(info.value)
    assert isinstance(info.value.__cause__, ValidationError)
    assert sum(sandbox.request_counts.values()) == 0  # nothing was sent


async def test_tool_without_context_is_invalid(sandbox: Sandbox, tools: dict[str, BaseTool]) -> None:
    with pytest.raises(InvalidArguments, match="needs a ToolCallContext"):
        await tools["charge_payment"].ainvoke(charge_args())
    assert sandbox.payment.charges == {}


async def test_transient_rate_through_tools_is_retryable() -> None:
    sandbox = Sandbox(Scenario(transient_rate=0.5, seed=1))
    async with sandbox.client() as client:
        tools = order_tools(client=client)
        cfg = config("inventory", "reserve_stock")
        failures = 0
        while True:
            try:
                await tools["reserve_stock"].ainvoke({"order_id": "o-1", "items": ITEMS, "currency": "EUR"}, config=cfg)
                break
            except TransientFailure as exc:
                assert exc.retryable
                assert "http://sandbox/inventory/reservations answered 503" in str(exc)
                failures += 1
                assert failures < 30
    assert sandbox.inventory.counters.effects == 1
    assert sandbox.inventory.stock["SKU-APPLE"] == 98
