"""The independent checker: the services' state and the event log against the world.

It trusts nothing the coordinator reports. The services' records are fetched over
HTTP from the sandbox (``GET /inventory/reservations``, ``/inventory/catalogue``,
``/payment/charges``, ``/shipping/shipments``), the effects made per idempotency
key are read from the sandbox's store file, and the events straight from the
SQLite event log. The statuses the product reported (its `--json` lines and
`coordinator status --json`) are only *compared* with what the log says.

Per order: it ended exactly once (one distinct terminal event); its chain did not
fork (no event with two distinct consequences); nothing is held for it unless it
completed; a completed order holds one reservation, one charge of its total and
one shipment; no effect was made twice; the reported status equals the log's.
Over the batch: charged - refunded equals the totals of the completed orders, and
stock is conserved (available = initial - held by reservations).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.process.torture.event_log import TERMINAL, LoggedEvent
from tests.process.torture.world import World

__all__ = ["Closing", "OrderEvidence", "ServicesState", "Verdict", "fetch_services", "judge"]

NOT_ENDED = "not ended"
#: What a report may say of an order that has not ended (it stopped short, or waits for a person).
UNFINISHED_REPORTS = frozenset({"failed", "awaiting_approval"})
#: What `coordinator status` may say of an order that has not ended.
UNFINISHED_STATUSES = frozenset({"in flight", "awaiting_approval", "failed"})


@dataclass(frozen=True)
class Closing:
    """The last command of the closing phase: the same `run` again (orchestration, or
    choreography with ``--closing-rerun``), else `resume`. Its exit code is judged:
    0 exactly when every order reached a business outcome consistently (for
    `resume`: every order that started; placing orders is not its job)."""

    command: str  # "run" or "resume"
    exit_code: int | None
    finished: bool  # it exited by itself (not killed as hung)


@dataclass
class ServicesState:
    """The sandbox's records, as fetched."""

    reservations: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    shipments: list[dict[str, Any]]
    catalogue: dict[str, dict[str, Any]]
    key_effects: dict[str, int]  # "service key" -> effects made under it

    def of(self, order_id: str) -> dict[str, list[dict[str, Any]]]:
        return {
            "reservation": [r for r in self.reservations if r["order_id"] == order_id],
            "charge": [c for c in self.charges if c["order_id"] == order_id],
            "shipment": [s for s in self.shipments if s["order_id"] == order_id],
        }


async def fetch_services(url: str, store: Path) -> ServicesState:
    """GET the sandbox's records; read the effects per idempotency key from its store."""
    base = url.rstrip("/")
    async with httpx.AsyncClient(timeout=60.0) as client:

        async def get(path: str) -> dict[str, Any]:
            response = await client.get(f"{base}{path}")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        reservations = (await get("/inventory/reservations"))["reservations"]
        charges = (await get("/payment/charges"))["charges"]
        shipments = (await get("/shipping/shipments"))["shipments"]
        catalogue = {item["sku"]: item for item in (await get("/inventory/catalogue"))["items"]}
    key_effects: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30.0)) as db:
        for service, key, effects in db.execute("SELECT service, key, effects FROM idempotency"):
            key_effects[f"{service} {key}"] = int(effects)
    return ServicesState(reservations, charges, shipments, catalogue, key_effects)


@dataclass
class OrderEvidence:
    """What an example order looks like: its events, what it holds, what was reported."""

    order_id: str
    expected: str
    log_status: str
    events: list[str]
    holds: list[str]
    records: list[str]
    reported: str | None
    status: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Verdict:
    """Every violation found, by order, and the batch-wide sums."""

    orders: int
    outcomes: dict[str, int] = field(default_factory=dict)  # log status -> orders
    stranded: dict[str, str] = field(default_factory=dict)
    never_placed: list[str] = field(default_factory=list)
    misreported: dict[str, str] = field(default_factory=dict)
    unreported: list[str] = field(default_factory=list)
    duplicated: dict[str, str] = field(default_factory=dict)
    forked: dict[str, str] = field(default_factory=dict)
    incomplete: dict[str, str] = field(default_factory=dict)
    unexpected: dict[str, str] = field(default_factory=dict)  # outcome differs from the world's (a note)
    money: dict[str, int] = field(default_factory=dict)
    money_ok: bool = True
    stock_problems: list[str] = field(default_factory=list)
    strangers: list[str] = field(default_factory=list)  # records of orders not in the batch
    exit_problem: str | None = None
    examples: dict[str, OrderEvidence] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (
            self.stranded
            or self.misreported
            or self.unreported
            or self.duplicated
            or self.forked
            or self.incomplete
            or not self.money_ok
            or self.stock_problems
            or self.strangers
            or self.exit_problem
        )

    def problems(self) -> list[str]:
        """One line per kind of violation."""
        lines = []
        for name, found in (
            ("stranded", self.stranded),
            ("misreported", self.misreported),
            ("duplicated", self.duplicated),
            ("forked", self.forked),
            ("completed without their effects", self.incomplete),
        ):
            if found:
                first = next(iter(found))
                lines.append(f"{len(found)} {name}, e.g. {first}: {found[first]}")
        if self.unreported:
            lines.append(f"{len(self.unreported)} never reported by the closing run, e.g. {self.unreported[0]}")
        if not self.money_ok:
            lines.append(
                f"money: charged - refunded = {self.money['net_cents']} cents but completed orders total "
                f"{self.money['completed_cents']} cents"
            )
        lines += [f"stock: {p}" for p in self.stock_problems]
        lines += [f"records of orders not in the batch: {s}" for s in self.strangers[:5]]
        if self.exit_problem:
            lines.append(f"exit code: {self.exit_problem}")
        return lines


def _distinct(events: Iterable[LoggedEvent]) -> list[LoggedEvent]:
    seen: set[str] = set()
    chain = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            chain.append(event)
    return chain


def _holds(records: dict[str, list[dict[str, Any]]]) -> list[str]:
    held = [f"reservation {r['reservation_id']} held" for r in records["reservation"] if r["status"] == "held"]
    held += [
        f"charge {c['charge_id']} {c['amount_cents']} cents captured"
        for c in records["charge"]
        if c["status"] == "captured"
    ]
    held += [f"shipment {s['shipment_id']} scheduled" for s in records["shipment"] if s["status"] == "scheduled"]
    return held


def judge(
    world: World,
    services: ServicesState,
    log: list[LoggedEvent],
    *,
    reported: dict[str, str],
    report_required: bool,
    status_rows: list[dict[str, Any]],
    closing: Closing,
    examples_per_kind: int = 5,
) -> Verdict:
    """Judge the batch. ``reported``: each order's last reported status (run/resume
    `--json` lines), which must cover every order when ``report_required`` (the
    closing run of the whole file finished); ``status_rows``: `coordinator status
    --json`; ``closing``: the closing command, whose exit code is judged."""
    verdict = Verdict(orders=len(world.orders))
    events_of: dict[str, list[LoggedEvent]] = defaultdict(list)
    for event in log:
        events_of[event.subject].append(event)
    status_of = {str(row.get("workflow_id")): str(row.get("status")) for row in status_rows}
    outcomes: dict[str, int] = defaultdict(int)
    completed_cents = 0
    flagged: dict[str, set[str]] = defaultdict(set)

    for order in world.orders:
        oid = order.order_id
        chain = _distinct(events_of.get(oid, []))
        ends = [e for e in chain if e.type in TERMINAL]
        log_status = NOT_ENDED
        if ends:
            first = ends[0]
            log_status = "completed" if first.type == "OrderCompleted" else str(first.data.get("status", "compensated"))
        outcomes[log_status] += 1
        records = services.of(oid)
        holds = _holds(records)
        if log_status == "completed":
            completed_cents += order.total_cents

        # ended exactly once, holding nothing unless completed
        if not chain:
            verdict.never_placed.append(oid)
            verdict.stranded[oid] = "never placed (no event)" + (f"; holds {', '.join(holds)}" if holds else "")
        elif not ends:
            verdict.stranded[oid] = f"not ended after {chain[-1].type}" + (
                f"; holds {', '.join(holds)}" if holds else ""
            )
        elif log_status != "completed" and holds:
            verdict.stranded[oid] = f"{log_status} but holds {', '.join(holds)}"
        if len(ends) > 1:
            verdict.duplicated[oid] = "ended more than once: " + ", ".join(f"{e.type} ({e.id[:8]})" for e in ends)

        # no effect twice: one record of each kind, one effect per idempotency key
        repeated = [f"{len(found)} {kind}s" for kind, found in records.items() if len(found) > 1]
        repeated += [
            f"{effects} effects under key {key!r}"
            for key, effects in services.key_effects.items()
            if effects > 1 and key.split(" ", 1)[1].startswith(f"{oid}/")
        ]
        if repeated:
            verdict.duplicated[oid] = "; ".join(filter(None, [verdict.duplicated.get(oid, ""), *repeated]))

        # one history: no event with two distinct consequences
        children: dict[str, list[LoggedEvent]] = defaultdict(list)
        for event in chain:
            if event.causation_id:
                children[event.causation_id].append(event)
        forks = [kids for kids in children.values() if len(kids) > 1]
        if forks:
            verdict.forked[oid] = "; ".join(
                " and ".join(f"{k.type} ({k.id[:8]})" for k in kids) + " from one cause" for kids in forks
            )

        # a completed order holds exactly its three effects, the charge for its total
        if log_status == "completed":
            charged = [c["amount_cents"] for c in records["charge"] if c["status"] == "captured"]
            held = sum(1 for r in records["reservation"] if r["status"] == "held")
            shipped = sum(1 for s in records["shipment"] if s["status"] == "scheduled")
            if charged != [order.total_cents] or held != 1 or shipped != 1:
                verdict.incomplete[oid] = (
                    f"holds {held} reservation(s), charges {charged} (total {order.total_cents}), {shipped} shipment(s)"
                )

        if log_status in ("completed", "compensated") and log_status != order.expected.value:
            verdict.unexpected[oid] = f"{log_status}, the world says {order.expected.value}"

        # the reported status equals the log's
        said = reported.get(oid)
        wrong = []
        if said is None:
            if report_required:
                verdict.unreported.append(oid)
        elif (said != log_status) if ends else (said not in UNFINISHED_REPORTS):
            wrong.append(f"reported {said}")
        shown = status_of.get(oid)
        if chain:
            if shown is None:
                wrong.append("missing from `status`")
            elif (shown != log_status) if ends else (shown not in UNFINISHED_STATUSES):
                wrong.append(f"`status` says {shown}")
        if wrong:
            verdict.misreported[oid] = f"{', '.join(wrong)}; the event log says {log_status}"

        for kind, found in (
            ("stranded", verdict.stranded),
            ("misreported", verdict.misreported),
            ("duplicated", verdict.duplicated),
            ("forked", verdict.forked),
            ("incomplete", verdict.incomplete),
            ("unexpected", verdict.unexpected),
        ):
            if oid in found and len(flagged[kind]) < examples_per_kind:
                flagged[kind].add(oid)
                verdict.examples[oid] = OrderEvidence(
                    order_id=oid,
                    expected=order.expected.value,
                    log_status=log_status,
                    events=[f"{e.type} [{e.source or '?'}, run {e.run_id}]" for e in chain],
                    holds=holds,
                    records=[
                        f"{kind_} {r.get('reservation_id') or r.get('charge_id') or r.get('shipment_id')} {r['status']}"
                        for kind_, found_ in records.items()
                        for r in found_
                    ],
                    reported=said,
                    status=shown,
                )
    verdict.outcomes = dict(outcomes)

    # money: charged - refunded = the totals of the completed orders
    charged = sum(c["amount_cents"] for c in services.charges)
    refunded = sum(c["amount_cents"] for c in services.charges if c["status"] == "refunded")
    verdict.money = {
        "charged_cents": charged,
        "refunded_cents": refunded,
        "net_cents": charged - refunded,
        "completed_cents": completed_cents,
    }
    verdict.money_ok = charged - refunded == completed_cents

    # stock: available = initial - held, for every SKU
    held_units: dict[str, int] = defaultdict(int)
    for reservation in services.reservations:
        if reservation["status"] == "held":
            for item in reservation["items"]:
                held_units[item["sku"]] += item["quantity"]
    for sku, initial in world.initial_stock.items():
        item = services.catalogue.get(sku)
        if item is None:
            verdict.stock_problems.append(f"{sku} is missing from the catalogue")
            continue
        if item["initial_stock"] != initial:
            verdict.stock_problems.append(f"{sku}: initial stock {item['initial_stock']}, the world says {initial}")
        if item["stock"] != initial - held_units[sku]:
            verdict.stock_problems.append(
                f"{sku}: {item['stock']} available, but {initial} initial - {held_units[sku]} held = "
                f"{initial - held_units[sku]}"
            )
    ours = {order.order_id for order in world.orders}
    for noun, made in (
        ("reservation", services.reservations),
        ("charge", services.charges),
        ("shipment", services.shipments),
    ):
        verdict.strangers += [f"{noun} for {r['order_id']}" for r in made if r["order_id"] not in ours]

    # exit code of the closing command: 0 exactly when every order (for `resume`: every
    # order that started) reached a business outcome and the services are consistent
    if closing.finished and closing.exit_code is not None:
        unfinished = [
            oid
            for oid in verdict.stranded
            if not (closing.command == "resume" and oid in verdict.never_placed)
            and "holds" not in verdict.stranded[oid]
        ]
        healthy = (
            not unfinished
            and outcomes.get("needs_attention", 0) == 0
            and not verdict.duplicated
            and not verdict.incomplete
            and verdict.money_ok
            and not verdict.stock_problems
            and not any("holds" in reason for reason in verdict.stranded.values())
        )
        if healthy and closing.exit_code != 0:
            verdict.exit_problem = (
                f"the closing {closing.command} exited {closing.exit_code} although every order ended consistently"
            )
        elif not healthy and closing.exit_code == 0:
            verdict.exit_problem = (
                f"the closing {closing.command} exited 0 although orders did not end, need attention or hold effects"
            )
    return verdict
