"""The order domain: the :class:`Order` input and the six service tools its saga uses.

The tools call the inventory, payment and shipping services over HTTP (the sandbox
by default) through :func:`tools.http.call_service`, so each call carries the
idempotency key of the step it serves and every failure arrives as a
:class:`~coordinator.errors.StepError`:

=====================  ==========================  ===============================
action                 compensation                service
=====================  ==========================  ===============================
``reserve_stock``      ``release_stock``           inventory
``charge_payment``     ``refund_payment``          payment
``schedule_shipment``  ``cancel_shipment``         shipping
=====================  ==========================  ===============================

Each action's result carries the id its compensation takes (``reservation_id``,
``charge_id``, ``shipment_id``).
"""

# No ``from __future__ import annotations`` here: LangChain resolves each tool
# coroutine's type hints on every call to find its ``RunnableConfig`` parameter, and
# evaluated annotations make that lookup ~5x cheaper and immune to unresolvable names
# (which would silently drop the config, and with it the idempotency key).

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self
from urllib.parse import quote

import httpx
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from coordinator.context import tool_call_context
from coordinator.errors import InvalidArguments
from tools.http import call_service

__all__ = [
    "Address",
    "CancelShipmentArgs",
    "ChargePaymentArgs",
    "LineItem",
    "Order",
    "OrderItem",
    "RefundPaymentArgs",
    "ReleaseStockArgs",
    "ReserveStockArgs",
    "ScheduleShipmentArgs",
    "ServiceUrls",
    "order_tools",
]

_MAX_LISTED_SKUS = 20

# -- the order input --------------------------------------------------------------------


class OrderItem(BaseModel):
    """One order line: a SKU, how many, at what unit price (cents).

    When validated with ``context={"known_skus": <collection>}`` an unknown SKU is
    rejected, naming it and the known ones.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, description="catalogue SKU, e.g. 'SKU-APPLE'")
    quantity: int = Field(gt=0, description="units ordered")
    unit_price_cents: int = Field(ge=0, description="price of one unit, in cents")

    @field_validator("sku")
    @classmethod
    def _known_sku(cls, sku: str, info: ValidationInfo) -> str:
        known = info.context.get("known_skus") if isinstance(info.context, Mapping) else None
        if known is not None and sku not in known:
            listed = sorted(str(s) for s in known)
            more = f" (and {len(listed) - _MAX_LISTED_SKUS} more)" if len(listed) > _MAX_LISTED_SKUS else ""
            raise ValueError(
                f"unknown SKU {sku!r}; known SKUs: {', '.join(listed[:_MAX_LISTED_SKUS])}{more}"
                if listed
                else f"unknown SKU {sku!r}; the catalogue is empty"
            )
        return sku


class Address(BaseModel):
    """A delivery address; ``country`` is an ISO 3166 alpha-2 code such as ``NL``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="recipient")
    line1: str = Field(min_length=1, description="street and number")
    city: str = Field(min_length=1)
    postcode: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="two uppercase letters, e.g. 'NL'")


class Order(BaseModel):
    """A customer order: the input of the order saga (reserve, charge, ship).

    ``order_id`` is the workflow id, so it becomes part of idempotency keys and URLs:
    it may not contain whitespace or ``/``. ``total_cents`` is derived from the items
    and is included in dumps; when an input carries it, it must match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\s/]+$")
    customer: str = Field(min_length=1)
    items: list[OrderItem] = Field(min_length=1)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. 'EUR'")
    payment_method: str = Field(min_length=1, description="payment token, e.g. 'tok_visa'")
    shipping_address: Address

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cents(self) -> int:
        """Sum of quantity x unit price over the items."""
        return sum(item.quantity * item.unit_price_cents for item in self.items)

    @model_validator(mode="wrap")
    @classmethod
    def _derived_total(cls, data: Any, handler: "ModelWrapValidatorHandler[Order]") -> "Order":
        # total_cents appears in dumps (so workflow facts can use it); accept it back on
        # input, but only when it agrees with the items, and never store it.
        claimed: Any = None
        if isinstance(data, Mapping) and "total_cents" in data:
            claimed = data["total_cents"]
            data = {k: v for k, v in data.items() if k != "total_cents"}
        order = handler(data)
        if claimed is not None and claimed != order.total_cents:
            raise ValueError(
                f"total_cents {claimed!r} does not match the items' total {order.total_cents}; "
                "omit total_cents or correct it"
            )
        return order


# -- service locations ------------------------------------------------------------------


class ServiceUrls(BaseModel):
    """Base URLs of the three services (no trailing slash needed). The defaults address
    the in-process sandbox (``Sandbox().client()``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inventory: str = "http://sandbox/inventory"
    payment: str = "http://sandbox/payment"
    shipping: str = "http://sandbox/shipping"

    @field_validator("inventory", "payment", "shipping")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @classmethod
    def at(cls, base_url: str) -> Self:
        """The services of one sandbox served at ``base_url`` (``python -m tools.sandbox``):
        ``at("http://127.0.0.1:8700")`` -> ``http://127.0.0.1:8700/inventory``, ``.../payment``,
        ``.../shipping``."""
        base = base_url.rstrip("/")
        return cls(inventory=f"{base}/inventory", payment=f"{base}/payment", shipping=f"{base}/shipping")


# -- tool argument schemas --------------------------------------------------------------


class LineItem(BaseModel):
    """A SKU and a quantity, as reserve_stock and schedule_shipment take them."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, description="catalogue SKU, e.g. 'SKU-APPLE'")
    quantity: int = Field(gt=0, description="number of units, at least 1")


class ReserveStockArgs(BaseModel):
    """Arguments of reserve_stock."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, description="the order the stock is held for")
    items: list[LineItem] = Field(min_length=1, description="every SKU and quantity of the order")


class ReleaseStockArgs(BaseModel):
    """Arguments of release_stock."""

    model_config = ConfigDict(extra="forbid")

    reservation_id: str = Field(min_length=1, description="the reservation_id reserve_stock returned")


class ChargePaymentArgs(BaseModel):
    """Arguments of charge_payment."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, description="the order being paid")
    amount_cents: int = Field(gt=0, description="the order total in cents (an integer, e.g. 1250 for 12.50)")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. 'EUR'")
    payment_method: str = Field(min_length=1, description="the order's payment token, e.g. 'tok_visa'")


class RefundPaymentArgs(BaseModel):
    """Arguments of refund_payment."""

    model_config = ConfigDict(extra="forbid")

    charge_id: str = Field(min_length=1, description="the charge_id charge_payment returned")


class ScheduleShipmentArgs(BaseModel):
    """Arguments of schedule_shipment."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, description="the order being shipped")
    address: Address = Field(description="the order's shipping address")
    items: list[LineItem] = Field(min_length=1, description="every SKU and quantity to ship")


class CancelShipmentArgs(BaseModel):
    """Arguments of cancel_shipment."""

    model_config = ConfigDict(extra="forbid")

    shipment_id: str = Field(min_length=1, description="the shipment_id schedule_shipment returned")


# -- the tools --------------------------------------------------------------------------


class _ServiceTool(StructuredTool):
    """A StructuredTool whose argument-schema failures raise InvalidArguments.

    LangChain raises pydantic's ValidationError for arguments that fail the schema;
    the coordinator acts on StepErrors only, so it is translated here, naming every
    offending field, to make a model's bad call a re-ask instead of a crash.
    """

    def _parse_input(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> str | dict[str, Any]:
        try:
            return super()._parse_input(tool_input, tool_call_id)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<args>'}: {e['msg']}" for e in exc.errors())
            raise InvalidArguments(f"invalid arguments for {self.name}: {detail}") from exc


def _items_json(items: list[LineItem]) -> list[dict[str, Any]]:
    return [{"sku": item.sku, "quantity": item.quantity} for item in items]


def _tool(
    name: str, description: str, args_schema: type[BaseModel], coroutine: Callable[..., Awaitable[dict[str, Any]]]
) -> BaseTool:
    return _ServiceTool.from_function(coroutine=coroutine, name=name, description=description, args_schema=args_schema)


def order_tools(*, client: httpx.AsyncClient, urls: ServiceUrls | None = None) -> dict[str, BaseTool]:
    """The six order tools, keyed by name, calling the services at ``urls`` with ``client``.

    Async only: call them with ``await tool.ainvoke(args, config=ToolCallContext(...).as_config())``
    (a coordinator does this). Each returns the service's JSON answer as a dict and
    raises :class:`~coordinator.errors.BusinessFailure`,
    :class:`~coordinator.errors.TransientFailure` or
    :class:`~coordinator.errors.InvalidArguments` (also for arguments that fail the
    schema, or a call without a ``ToolCallContext``).
    """
    urls = urls if urls is not None else ServiceUrls()

    async def reserve_stock(order_id: str, items: list[LineItem], config: RunnableConfig) -> dict[str, Any]:
        body = {"order_id": order_id, "items": _items_json(items)}
        context = tool_call_context(config)
        return await call_service(client, "POST", f"{urls.inventory}/reservations", json=body, context=context)

    async def release_stock(reservation_id: str, config: RunnableConfig) -> dict[str, Any]:
        url = f"{urls.inventory}/reservations/{quote(reservation_id, safe='')}/release"
        return await call_service(client, "POST", url, json=None, context=tool_call_context(config))

    async def charge_payment(
        order_id: str, amount_cents: int, currency: str, payment_method: str, config: RunnableConfig
    ) -> dict[str, Any]:
        body = {
            "order_id": order_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "payment_method": payment_method,
        }
        context = tool_call_context(config)
        return await call_service(client, "POST", f"{urls.payment}/charges", json=body, context=context)

    async def refund_payment(charge_id: str, config: RunnableConfig) -> dict[str, Any]:
        url = f"{urls.payment}/charges/{quote(charge_id, safe='')}/refund"
        return await call_service(client, "POST", url, json=None, context=tool_call_context(config))

    async def schedule_shipment(
        order_id: str, address: Address, items: list[LineItem], config: RunnableConfig
    ) -> dict[str, Any]:
        body = {"order_id": order_id, "address": address.model_dump(), "items": _items_json(items)}
        context = tool_call_context(config)
        return await call_service(client, "POST", f"{urls.shipping}/shipments", json=body, context=context)

    async def cancel_shipment(shipment_id: str, config: RunnableConfig) -> dict[str, Any]:
        url = f"{urls.shipping}/shipments/{quote(shipment_id, safe='')}/cancel"
        return await call_service(client, "POST", url, json=None, context=tool_call_context(config))

    tools = [
        _tool(
            "reserve_stock",
            "Reserve stock for an order: holds every listed SKU and quantity, all or nothing. "
            "Returns {reservation_id, order_id, items, status: 'held'}. Fails if a SKU is unknown "
            "or out of stock.",
            ReserveStockArgs,
            reserve_stock,
        ),
        _tool(
            "release_stock",
            "Release a reservation made by reserve_stock, returning its units to stock. Safe to repeat. "
            "Returns {reservation_id, status: 'released'}.",
            ReleaseStockArgs,
            release_stock,
        ),
        _tool(
            "charge_payment",
            "Charge the order's payment method for the order total (integer cents, with its currency). "
            "Returns {charge_id, order_id, amount_cents, currency, status: 'captured'}. Fails if the card "
            "is declined.",
            ChargePaymentArgs,
            charge_payment,
        ),
        _tool(
            "refund_payment",
            "Refund a charge made by charge_payment in full. Safe to repeat. "
            "Returns {charge_id, status: 'refunded', amount_cents}.",
            RefundPaymentArgs,
            refund_payment,
        ),
        _tool(
            "schedule_shipment",
            "Schedule delivery of the order's items to its shipping address. "
            "Returns {shipment_id, order_id, status: 'scheduled', carrier, eta_days}. Fails if the "
            "country cannot be shipped to.",
            ScheduleShipmentArgs,
            schedule_shipment,
        ),
        _tool(
            "cancel_shipment",
            "Cancel a shipment made by schedule_shipment. Safe to repeat. Returns {shipment_id, status: 'cancelled'}.",
            CancelShipmentArgs,
            cancel_shipment,
        ),
    ]
    return {tool.name: tool for tool in tools}
