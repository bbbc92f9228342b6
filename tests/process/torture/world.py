"""The world a torture run happens in: its orders, their catalogue and the services' rules.

Everything here is the harness's own description, written to files the coordinator
reads (the orders as JSON lines, the sandbox scenario as JSON) and kept for the
checker, which judges the services' state against it -- never against what the
coordinator reports. The orders are drawn from the seed: mostly orders that
complete (some on a card that times out twice before it is charged), and orders
that must be compensated at each step (sold out, card declined, unshippable).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "PlannedOrder", "World", "make_world"]

#: Unit prices (cents) of the SKUs in stock; every one has STOCK units.
PRICES = {"SKU-APPLE": 120, "SKU-PEAR": 150, "SKU-KIWI": 90, "SKU-MANGO": 350, "SKU-FIG": 275}
SOLD_OUT = "SKU-SOLDOUT"
SOLD_OUT_PRICE = 600
#: Enough units of each SKU that no completable order ever runs out.
STOCK = 1_000_000
DECLINED_CARD = "tok_declined"
FLAKY_CARD = "tok_flaky"
UNSHIPPABLE = "AQ"
ADDRESSES = {
    "GB": ("12 St James's Square", "London", "SW1Y 4JH"),
    "FR": ("1 Rue de Rivoli", "Paris", "75001"),
    "NL": ("Plantage Muidergracht 24", "Amsterdam", "1018 TV"),
    "US": ("32 Vassar St", "Cambridge", "02139"),
    UNSHIPPABLE: ("Framheim", "Bay of Whales", "0000"),
}


class Outcome(StrEnum):
    """The business outcome the services' rules give an order (a deadline may still
    cancel an order that could have completed: that is a business outcome too)."""

    COMPLETED = "completed"
    COMPENSATED = "compensated"


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """One order of the batch: what it buys, how it pays, where it goes."""

    order_id: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity)
    card: str
    country: str
    expected: Outcome

    def price(self, sku: str) -> int:
        return SOLD_OUT_PRICE if sku == SOLD_OUT else PRICES[sku]

    @property
    def total_cents(self) -> int:
        """What a completed order is charged: quantity x unit price over its lines."""
        return sum(quantity * self.price(sku) for sku, quantity in self.lines)

    def as_input(self) -> dict[str, Any]:
        """The order as a line of the JSON-lines file `coordinator run` reads."""
        line1, city, postcode = ADDRESSES[self.country]
        customer = f"Customer {self.order_id}"
        return {
            "order_id": self.order_id,
            "customer": customer,
            "items": [
                {"sku": sku, "quantity": quantity, "unit_price_cents": self.price(sku)} for sku, quantity in self.lines
            ],
            "currency": "EUR",
            "payment_method": self.card,
            "shipping_address": {
                "name": customer,
                "line1": line1,
                "city": city,
                "postcode": postcode,
                "country": self.country,
            },
        }


@dataclass(frozen=True, slots=True)
class World:
    """The batch and the sandbox scenario it runs against."""

    orders: tuple[PlannedOrder, ...]
    latency_ms: float

    @property
    def initial_stock(self) -> dict[str, int]:
        return {**dict.fromkeys(PRICES, STOCK), SOLD_OUT: 0}

    def by_id(self) -> dict[str, PlannedOrder]:
        return {order.order_id: order for order in self.orders}

    def scenario(self) -> dict[str, Any]:
        """The sandbox scenario (``coordinator sandbox --scenario``), stated in full."""
        catalogue = {
            sku: {"name": sku.removeprefix("SKU-").title(), "unit_price_cents": price, "stock": STOCK}
            for sku, price in PRICES.items()
        }
        catalogue[SOLD_OUT] = {"name": "Dragon fruit", "unit_price_cents": SOLD_OUT_PRICE, "stock": 0}
        return {
            "catalogue": catalogue,
            "declined_cards": [DECLINED_CARD],
            "unshippable_countries": [UNSHIPPABLE],
            "flaky_cards": {FLAKY_CARD: 2},
            "latency_ms": self.latency_ms,
        }

    def write_orders(self, path: Path, orders: tuple[PlannedOrder, ...] | None = None) -> Path:
        """Write ``orders`` (default: the whole batch) as a JSON-lines input file."""
        chosen = self.orders if orders is None else orders
        path.write_text("".join(json.dumps(order.as_input()) + "\n" for order in chosen), encoding="utf-8")
        return path

    def write_scenario(self, path: Path) -> Path:
        path.write_text(json.dumps(self.scenario(), indent=1), encoding="utf-8")
        return path


def make_world(count: int, *, seed: int, latency_ms: float, prefix: str = "t") -> World:
    """``count`` orders drawn from ``seed``: 70% completable (one in seven of them on a
    card that times out twice first), 10% sold out, 10% declined, 10% unshippable."""
    rng = random.Random(f"torture-world-{seed}")
    skus = sorted(PRICES)
    orders = []
    for i in range(count):
        lines = tuple((sku, rng.randint(1, 5)) for sku in rng.sample(skus, rng.randint(1, 3)))
        card, country, expected = rng.choice(["tok_visa", "tok_mastercard"]), rng.choice(["GB", "FR", "NL", "US"]), 0
        draw = rng.random()
        if draw < 0.1:
            lines = (*lines[:1], (SOLD_OUT, 1))
            expected = 1
        elif draw < 0.2:
            card, expected = DECLINED_CARD, 1
        elif draw < 0.3:
            country, expected = UNSHIPPABLE, 1
        elif draw < 0.4:
            card = FLAKY_CARD
        orders.append(
            PlannedOrder(
                order_id=f"{prefix}-{i:05d}",
                lines=lines,
                card=card,
                country=country,
                expected=Outcome.COMPENSATED if expected else Outcome.COMPLETED,
            )
        )
    return World(orders=tuple(orders), latency_ms=latency_ms)
