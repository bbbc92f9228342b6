"""What every scenario shares: the orders, the sandbox world, the fake model, the
driver that times orders, and the counters.

Everything here is the same for the references and for our coordinators, which is
what makes their figures comparable:

* :func:`generate_orders` -- ``n`` orders cycled from ``examples/orders/orders.jsonl``, each
  with a unique id (``o-1001-b000042``);
* :func:`benchmark_world` -- the sandbox :class:`~agent_coordinator.examples.orders.sandbox.Scenario` the orders
  run against: stock that never runs out and no declined card, unshippable country
  or flaky card, so every order in every implementation takes the same path
  (reserve, charge, ship); failure paths are tested, not benchmarked;
* :class:`BenchmarkChatModel` -- the project's :class:`~agent_coordinator.agents.fake.ScriptedChatModel`
  with an optional simulated latency per call, counting its calls.

How orders are timed and counted is in :mod:`benchmarks.measure`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from agent_coordinator.agents.fake import ScriptedChatModel
from agent_coordinator.examples.orders.sandbox import CatalogueItem, Scenario, default_catalogue
from agent_coordinator.examples.orders.tools import Order

__all__ = ["EXAMPLE_ORDERS", "UNLIMITED_STOCK", "BenchmarkChatModel", "benchmark_world", "generate_orders"]

EXAMPLE_ORDERS = Path(__file__).resolve().parent.parent / "examples" / "orders" / "orders.jsonl"

#: Stock per SKU in the benchmark world: more than any run can reserve.
UNLIMITED_STOCK = 10**12


def generate_orders(n: int, *, prefix: str = "b", source: Path = EXAMPLE_ORDERS) -> list[Order]:
    """``n`` validated orders cycled from the example orders, ids made unique.

    Order ``i`` copies example ``i % 8`` with ``order_id`` ``<example id>-<prefix><i>``;
    use a different ``prefix`` for warm-up orders so ids never collide.
    """
    examples = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not examples:
        raise ValueError(f"no orders in {source}; the benchmarks need at least one example order")
    orders = []
    for i in range(n):
        example = examples[i % len(examples)]
        orders.append(Order.model_validate({**example, "order_id": f"{example['order_id']}-{prefix}{i:06d}"}))
    return orders


def benchmark_world() -> Scenario:
    """The sandbox world of the benchmarks: every example order completes.

    The default catalogue with stock that never runs out (``SKU-SOLDOUT`` included),
    and the example orders' failure triggers switched off: no declined card, no
    unshippable country, no flaky card (whose 503s would make the run measure backoff
    sleeps), no random faults, no service latency.
    """
    catalogue = {
        sku: CatalogueItem(name=item.name, unit_price_cents=item.unit_price_cents, stock=UNLIMITED_STOCK)
        for sku, item in default_catalogue().items()
    }
    return Scenario(
        catalogue=catalogue,
        declined_cards=frozenset(),
        unshippable_countries=frozenset(),
        flaky_cards={},
        transient_rate=0.0,
        latency_ms=0.0,
    )


class BenchmarkChatModel(ScriptedChatModel):
    """The scripted fake model, plus a simulated provider latency and a call counter.

    ``latency`` seconds are awaited (``asyncio.sleep``, so concurrent calls overlap
    as they would against a real provider) before the policy answers. ``calls``
    counts answers given through the async path, which is the only path the
    coordinators and the prebuilt agents use.
    """

    latency: float = 0.0
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._calls += 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
