"""The order domain: the :class:`Order` input and the six service tools its saga uses.

The tools call the inventory, payment and shipping services over HTTP (the sandbox
by default) through :func:`agent_coordinator.tools.http.call_service`, so each call carries the
idempotency key of the step it serves and every failure arrives as a
:class:`~agent_coordinator.core.errors.StepError`:

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

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Self
from urllib.parse import quote

import httpx
from langchain_core.tools import BaseTool
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
)

from agent_coordinator.core.context import ToolCallContext
from agent_coordinator.tools.http import call_service
from agent_coordinator.tools.step import step_tool

__all__ = [
    "ISO_4217_CURRENCIES",
    "MAX_AMOUNT_CENTS",
    "MAX_ORDER_LINES",
    "MAX_QUANTITY",
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

# -- bounds and vocabularies of the order input -------------------------------------------

#: Most units one order line may ask for.
MAX_QUANTITY = 1_000_000
#: Most cents a unit price, and an order's total, may be (10 billion in the main unit).
#: Every number of an order stays far inside the 64 bits that checkpoints, events
#: and the services' stores hold, whatever is multiplied or summed.
MAX_AMOUNT_CENTS = 10**12
#: Most lines one order may have.
MAX_ORDER_LINES = 1_000
#: Longest order id, SKU, payment token and free-text field, in characters.
MAX_ID_LENGTH = 200
MAX_SKU_LENGTH = 64
MAX_TEXT_LENGTH = 200

#: ISO 4217 codes of the currencies money changes hands in (list one, 2025): every
#: active national and regional currency. Left out on purpose: funds and units of
#: account (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW, XDR, XSU, XUA), precious
#: metals (XAG, XAU, XPD, XPT), bond-market units (XBA-XBD), the test code XTS and
#: XXX, "no currency".
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL
    BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL
    LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD
    SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
    UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
ISO_4217_CURRENCIES = frozenset(_ISO_4217_CODES.split())

_SHOWN_CHARACTERS = 40

# Characters refused in one-line text, by Unicode category: controls (NUL, ESC, tab,
# newline...), line breaks, and code points that are not characters at all.
_NOT_TEXT = {
    "Cc": "a control character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def _shown(value: Any) -> str:
    """``value`` as a message quotes it, cut short: a 50 MB name must not flood a log."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARACTERS:
        value = value[:_SHOWN_CHARACTERS] + "..."
    return repr(value)


def _character(char: str) -> str:
    return f"U+{ord(char):04X}"


def _one_line_text(value: str) -> str:
    for position, char in enumerate(value):
        kind = _NOT_TEXT.get(unicodedata.category(char))
        if kind is not None:
            raise ValueError(
                f"{_shown(value)} contains {_character(char)} ({kind}) at position {position}; "
                "use printable text on one line"
            )
    return value


def _identifier(value: str) -> str:
    # An id names the workflow in events, logs, URLs and idempotency keys: one printable
    # word. Any script is welcome (headers get it percent-encoded, see coordinator.context);
    # whitespace, '/' and invisible characters are not, since two ids that look alike
    # must not name two orders.
    for position, char in enumerate(value):
        if char == "/" or char.isspace() or not char.isprintable():
            kind = _NOT_TEXT.get(unicodedata.category(char)) or ("whitespace" if char.isspace() else "")
            what = f"{_character(char)} ({kind})" if kind else f"{char!r} ({_character(char)})"
            raise ValueError(
                f"{_shown(value)} contains {what} at position {position}; an id is one word of printable "
                "characters, without whitespace or '/'"
            )
    return value


def _whole_number(value: Any) -> Any:
    # Strict, with a message that names the value: in lax mode pydantic would take
    # "3" as 3 and true as 1 (a bool is an int in Python).
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'{_shown(value)} is not a whole number; write it as a JSON integer, e.g. 3, not "3"')
    return value


def _iso_currency(code: str) -> str:
    if code not in ISO_4217_CURRENCIES:
        if code.upper() in ISO_4217_CURRENCIES:
            raise ValueError(f"{_shown(code)} must be written in capitals: {code.upper()!r}")
        raise ValueError(
            f"{_shown(code)} is not the ISO 4217 code of a currency one can pay in; "
            "use one such as 'EUR', 'USD' or 'GBP'"
        )
    return code


#: An order id: one printable word (any script), no whitespace, '/' or control characters.
OrderId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_identifier)]
#: A line of free text: printable characters (spaces included), no control characters.
OneLineText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH), AfterValidator(_one_line_text)]
#: A count of units: a JSON integer (never a string or a boolean), 1 to MAX_QUANTITY.
Quantity = Annotated[int, BeforeValidator(_whole_number), Field(strict=True, gt=0, le=MAX_QUANTITY)]
#: An amount in cents: a JSON integer, 0 to MAX_AMOUNT_CENTS.
Cents = Annotated[int, BeforeValidator(_whole_number), Field(strict=True, ge=0, le=MAX_AMOUNT_CENTS)]
#: An ISO 4217 currency code one can pay in (see ISO_4217_CURRENCIES).
Currency = Annotated[str, AfterValidator(_iso_currency)]


def _context(info: ValidationInfo, key: str) -> Any:
    return info.context.get(key) if isinstance(info.context, Mapping) else None


# -- the order input --------------------------------------------------------------------


class OrderItem(BaseModel):
    """One order line: a SKU, how many, at what unit price (cents).

    When validated with ``context={"known_skus": <collection>}`` an unknown SKU is
    rejected, naming it and the known ones; with ``context={"catalogue_prices":
    {sku: cents}}`` a unit price other than the catalogue's is rejected, naming the
    SKU, the stated and the catalogue price.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=MAX_SKU_LENGTH, description="catalogue SKU, e.g. 'SKU-APPLE'")
    quantity: Quantity = Field(description=f"units ordered, 1 to {MAX_QUANTITY}")
    unit_price_cents: Cents = Field(description="price of one unit, in cents")

    @field_validator("sku")
    @classmethod
    def _known_sku(cls, sku: str, info: ValidationInfo) -> str:
        _one_line_text(sku)
        known = _context(info, "known_skus")
        if known is not None and sku not in known:
            listed = sorted(str(s) for s in known)
            more = f" (and {len(listed) - _MAX_LISTED_SKUS} more)" if len(listed) > _MAX_LISTED_SKUS else ""
            raise ValueError(
                f"unknown SKU {_shown(sku)}; known SKUs: {', '.join(listed[:_MAX_LISTED_SKUS])}{more}"
                if listed
                else f"unknown SKU {_shown(sku)}; the catalogue is empty"
            )
        return sku

    @field_validator("unit_price_cents")
    @classmethod
    def _catalogue_price(cls, price: int, info: ValidationInfo) -> int:
        prices = _context(info, "catalogue_prices")
        sku = info.data.get("sku")  # absent when the SKU itself was refused
        if prices is not None and sku in prices and price != prices[sku]:
            raise ValueError(
                f"{sku} costs {prices[sku]} cents in the catalogue, not the stated {price}; "
                f"prices come from the catalogue: state {prices[sku]}"
            )
        return price


class Address(BaseModel):
    """A delivery address; ``country`` is an ISO 3166 alpha-2 code such as ``NL``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: OneLineText = Field(description="recipient")
    line1: OneLineText = Field(description="street and number")
    city: OneLineText
    postcode: Annotated[str, Field(min_length=1, max_length=20), AfterValidator(_one_line_text)]
    country: str = Field(pattern=r"^[A-Z]{2}$", description="two uppercase letters, e.g. 'NL'")


class Order(BaseModel):
    """A customer order: the input of the order saga (reserve, charge, ship).

    Every field is bounded (see ``MAX_*``): numbers are JSON integers (never strings
    or booleans) within their bounds, text has a maximum length and no control
    characters. ``order_id`` is the workflow id: one word of printable characters in
    any script, without whitespace or ``/`` (it is percent-encoded where it goes into
    a header, see :func:`agent_coordinator.core.context.idempotency_key`). ``currency`` is an
    ISO 4217 code (:data:`ISO_4217_CURRENCIES`). ``total_cents`` is derived from the
    items and is included in dumps; when an input carries it, it must match, and it
    is never stored.

    Prices come from the catalogue: the inventory service prices the reservation and
    the charge is the reservation's total, whatever the order states. When the
    validation context knows the catalogue (``known_skus``, ``catalogue_prices``,
    ``catalogue_currency``, as the order app's environment gives it), an order that
    states another price or currency is refused here, before anything runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: OrderId
    customer: OneLineText
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ORDER_LINES)
    currency: Currency = Field(default="EUR", description="ISO 4217 code, e.g. 'EUR'")
    payment_method: OneLineText = Field(description="payment token, e.g. 'tok_visa'")
    shipping_address: Address
    # total_cents appears in dumps (so workflow facts can use it); accept it back on
    # input, checked against the items, but never keep it (two equal orders must not
    # differ by whether their input stated the total).
    claimed_total_cents: Cents | None = Field(
        default=None, alias="total_cents", exclude=True, repr=False, description="optional; must match the items"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cents(self) -> int:
        """Sum of quantity x unit price over the items."""
        return sum(item.quantity * item.unit_price_cents for item in self.items)

    @field_validator("items")
    @classmethod
    def _bounded_total(cls, items: list[OrderItem]) -> list[OrderItem]:
        total = sum(item.quantity * item.unit_price_cents for item in items)
        if total > MAX_AMOUNT_CENTS:
            raise ValueError(
                f"the items total {total} cents, more than the {MAX_AMOUNT_CENTS} one order may total; "
                "split it into several orders"
            )
        return items

    @field_validator("currency")
    @classmethod
    def _catalogue_currency(cls, currency: str, info: ValidationInfo) -> str:
        priced_in = _context(info, "catalogue_currency")
        if priced_in is not None and currency != priced_in:
            raise ValueError(f"the catalogue prices in {priced_in}, not {currency}; order in {priced_in}")
        return currency

    @field_validator("claimed_total_cents")
    @classmethod
    def _matching_total(cls, claimed: int | None, info: ValidationInfo) -> None:
        items = info.data.get("items")
        if claimed is not None and items is not None:
            total = sum(item.quantity * item.unit_price_cents for item in items)
            if claimed != total:
                raise ValueError(
                    f"total_cents {claimed} does not match the items' total {total}; omit total_cents or correct it"
                )
        return None


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
        """The services of one sandbox served at ``base_url`` (``python -m agent_coordinator.examples.orders.sandbox``):
        ``at("http://127.0.0.1:8700")`` -> ``http://127.0.0.1:8700/inventory``, ``.../payment``,
        ``.../shipping``."""
        base = base_url.rstrip("/")
        return cls(inventory=f"{base}/inventory", payment=f"{base}/payment", shipping=f"{base}/shipping")


# -- tool argument schemas --------------------------------------------------------------


class LineItem(BaseModel):
    """A SKU and a quantity, as reserve_stock and schedule_shipment take them."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=MAX_SKU_LENGTH, description="catalogue SKU, e.g. 'SKU-APPLE'")
    quantity: int = Field(gt=0, le=MAX_QUANTITY, description=f"number of units, 1 to {MAX_QUANTITY}")


class ReserveStockArgs(BaseModel):
    """Arguments of reserve_stock."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="the order the stock is held for")
    items: list[LineItem] = Field(
        min_length=1, max_length=MAX_ORDER_LINES, description="every SKU and quantity of the order"
    )
    # Not checked against ISO 4217 here: the guard holds it to the order's (validated)
    # currency, and the service refuses a currency its catalogue does not price in.
    currency: str = Field(
        min_length=1, max_length=MAX_TEXT_LENGTH, description="the order's ISO 4217 code, e.g. 'EUR': prices are in it"
    )


class ReleaseStockArgs(BaseModel):
    """Arguments of release_stock."""

    model_config = ConfigDict(extra="forbid")

    reservation_id: str = Field(min_length=1, description="the reservation_id reserve_stock returned")


class ChargePaymentArgs(BaseModel):
    """Arguments of charge_payment."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="the order being paid")
    amount_cents: int = Field(
        gt=0, le=MAX_AMOUNT_CENTS, description="the order total in cents (an integer, e.g. 1250 for 12.50)"
    )
    currency: Currency = Field(description="ISO 4217 code, e.g. 'EUR'")
    payment_method: str = Field(
        min_length=1, max_length=MAX_TEXT_LENGTH, description="the order's payment token, e.g. 'tok_visa'"
    )


class RefundPaymentArgs(BaseModel):
    """Arguments of refund_payment."""

    model_config = ConfigDict(extra="forbid")

    charge_id: str = Field(min_length=1, description="the charge_id charge_payment returned")


class ScheduleShipmentArgs(BaseModel):
    """Arguments of schedule_shipment."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="the order being shipped")
    address: Address = Field(description="the order's shipping address")
    items: list[LineItem] = Field(
        min_length=1, max_length=MAX_ORDER_LINES, description="every SKU and quantity to ship"
    )


class CancelShipmentArgs(BaseModel):
    """Arguments of cancel_shipment."""

    model_config = ConfigDict(extra="forbid")

    shipment_id: str = Field(min_length=1, description="the shipment_id schedule_shipment returned")


# -- the tools --------------------------------------------------------------------------


def _items_json(items: list[LineItem]) -> list[dict[str, Any]]:
    return [{"sku": item.sku, "quantity": item.quantity} for item in items]


def order_tools(*, client: httpx.AsyncClient, urls: ServiceUrls | None = None) -> dict[str, BaseTool]:
    """The six order tools, keyed by name, calling the services at ``urls`` with ``client``.

    Step tools (:func:`agent_coordinator.tools.step.step_tool`), async only: call them
    with ``await tool.ainvoke(args, config=ToolCallContext(...).as_config())`` (a
    coordinator does this). Each returns the service's JSON answer as a dict and
    raises :class:`~agent_coordinator.core.errors.BusinessFailure`,
    :class:`~agent_coordinator.core.errors.TransientFailure` or
    :class:`~agent_coordinator.core.errors.InvalidArguments` (also for arguments that fail the
    schema, or a call without a ``ToolCallContext``). Their schemas are the ``*Args``
    models above, whose field descriptions and bounds the models read.
    """
    urls = urls if urls is not None else ServiceUrls()

    @step_tool(
        args_schema=ReserveStockArgs,
        description="Reserve stock for an order: holds every listed SKU and quantity, all or nothing, and prices "
        "them from the catalogue in the order's currency. Returns {reservation_id, order_id, "
        "items: [{sku, quantity, unit_price_cents}], total_cents, currency, status: 'held'}; "
        "total_cents is what the order costs. Fails if a SKU is unknown or out of stock, or the "
        "catalogue does not price in that currency.",
    )
    async def reserve_stock(
        order_id: str, items: list[LineItem], currency: str, *, call: ToolCallContext
    ) -> dict[str, Any]:
        body = {"order_id": order_id, "items": _items_json(items), "currency": currency}
        return await call_service(client, "POST", f"{urls.inventory}/reservations", json=body, context=call)

    @step_tool(
        args_schema=ReleaseStockArgs,
        description="Release a reservation made by reserve_stock, returning its units to stock. Safe to repeat. "
        "Returns {reservation_id, status: 'released'}.",
    )
    async def release_stock(reservation_id: str, *, call: ToolCallContext) -> dict[str, Any]:
        url = f"{urls.inventory}/reservations/{quote(reservation_id, safe='')}/release"
        return await call_service(client, "POST", url, json=None, context=call)

    @step_tool(
        args_schema=ChargePaymentArgs,
        description="Charge the order's payment method for the order total (integer cents, with its currency). "
        "Returns {charge_id, order_id, amount_cents, currency, status: 'captured'}. Fails if the card "
        "is declined.",
    )
    async def charge_payment(
        order_id: str, amount_cents: int, currency: str, payment_method: str, *, call: ToolCallContext
    ) -> dict[str, Any]:
        body = {
            "order_id": order_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "payment_method": payment_method,
        }
        return await call_service(client, "POST", f"{urls.payment}/charges", json=body, context=call)

    @step_tool(
        args_schema=RefundPaymentArgs,
        description="Refund a charge made by charge_payment in full. Safe to repeat. "
        "Returns {charge_id, status: 'refunded', amount_cents}.",
    )
    async def refund_payment(charge_id: str, *, call: ToolCallContext) -> dict[str, Any]:
        url = f"{urls.payment}/charges/{quote(charge_id, safe='')}/refund"
        return await call_service(client, "POST", url, json=None, context=call)

    @step_tool(
        args_schema=ScheduleShipmentArgs,
        description="Schedule delivery of the order's items to its shipping address. "
        "Returns {shipment_id, order_id, status: 'scheduled', carrier, eta_days}. Fails if the "
        "country cannot be shipped to.",
    )
    async def schedule_shipment(
        order_id: str, address: Address, items: list[LineItem], *, call: ToolCallContext
    ) -> dict[str, Any]:
        body = {"order_id": order_id, "address": address.model_dump(), "items": _items_json(items)}
        return await call_service(client, "POST", f"{urls.shipping}/shipments", json=body, context=call)

    @step_tool(
        args_schema=CancelShipmentArgs,
        description="Cancel a shipment made by schedule_shipment. Safe to repeat. Returns {shipment_id, status: "
        "'cancelled'}.",
    )
    async def cancel_shipment(shipment_id: str, *, call: ToolCallContext) -> dict[str, Any]:
        url = f"{urls.shipping}/shipments/{quote(shipment_id, safe='')}/cancel"
        return await call_service(client, "POST", url, json=None, context=call)

    tools = [reserve_stock, release_stock, charge_payment, refund_payment, schedule_shipment, cancel_shipment]
    return {tool.name: tool for tool in tools}
