"""Business failures for orders, by the sandbox's own rules.

:func:`sabotage_order` is the order domain's :data:`~agent_coordinator.lab.faults.Saboteur`:
given an order and the step that must fail, it changes the order so that the
service of that step refuses it for a business reason the :class:`Scenario`
defines -- nothing is forced from outside the services:

* ``inventory`` -- one more line of a SKU the scenario has no stock of
  (``SKU-SOLDOUT``): insufficient stock;
* ``payment`` -- a card the scenario declines (``tok_declined``);
* ``shipping`` -- an address in a country the scenario cannot ship to (``AQ``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_coordinator.examples.orders.sandbox.scenario import Scenario

__all__ = ["sabotage_order"]


def sabotage_order(order: Mapping[str, Any], step: str, *, scenario: Scenario | None = None) -> dict[str, Any]:
    """``order`` (a JSON-mode dict) changed so that ``step`` meets a business refusal.

    Raises ``ValueError`` for a step the order domain does not know, or a scenario
    without the means (no sold-out SKU, no declined card, no unshippable country).
    """
    scenario = scenario or Scenario.default()
    changed = dict(order)
    if step == "inventory":
        soldout = sorted(sku for sku, item in scenario.catalogue.items() if item.stock == 0)
        if not soldout:
            raise ValueError("the scenario has no SKU without stock to fail a reservation with")
        sku = soldout[0]
        price = scenario.catalogue[sku].unit_price_cents
        changed["items"] = [*order["items"], {"sku": sku, "quantity": 1, "unit_price_cents": price}]
    elif step == "payment":
        if not scenario.declined_cards:
            raise ValueError("the scenario declines no card")
        changed["payment_method"] = sorted(scenario.declined_cards)[0]
    elif step == "shipping":
        if not scenario.unshippable_countries:
            raise ValueError("the scenario can ship anywhere")
        changed["shipping_address"] = {
            **order["shipping_address"],
            "country": sorted(scenario.unshippable_countries)[0],
        }
    else:
        raise ValueError(f"no business failure known for step {step!r}; steps: inventory, payment, shipping")
    return changed
