"""Driving choreography through a kill schedule: an owner, workers and a broker.

The broker is one the harness started (:mod:`tests.process.torture.brokers`). Two
`coordinator worker` processes host each of inventory, payment, shipping and the
projection; `coordinator run FILE --mode choreography --workers external
--deadline S` hosts only the owner, which places the orders, ends them and keeps
their deadlines. A killed worker is started again at once; a worker that exits by
itself is an incident, and is started again too (as a service manager would).

A killed owner is started again on the same file, as a user would. When such a
rerun stalls (it makes no progress for the stall limit), that is recorded and the
owner is started instead on the orders not yet placed (or, with none left, as
`coordinator worker owner`), so the rest of the schedule still runs. The closing
phase is the same for every owner: let it finish, `coordinator resume`, the same
`coordinator run` again, SIGTERM the workers, then the dead letters and `status`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from tests.process.torture.brokers import NatsServer, RabbitNode
from tests.process.torture.driver import Aborted, Driver, Stalled
from tests.process.torture.processes import POLL_S, Process, wait_for
from tests.process.torture.schedule import PARTICIPANTS, KillKind, PlannedKill

__all__ = ["EMITS", "TRIGGERS", "ChoreographyDriver"]

#: What each participant reacts to (docs/architecture.md, "One order, choreographed").
TRIGGERS: dict[str, frozenset[str]] = {
    "inventory": frozenset({"OrderPlaced", "PaymentFailed", "PaymentRefunded", "PaymentRefundedFailed"}),
    "payment": frozenset({"InventoryReserved", "ShipmentFailed", "ShipmentCancelled", "ShipmentCancelledFailed"}),
    "shipping": frozenset({"PaymentProcessed"}),
    "owner": frozenset(
        {"ShipmentScheduled", "InventoryReservationFailed", "InventoryReleased", "InventoryReleasedFailed"}
    ),
}
#: What each participant emits (the projection emits nothing: None means any event).
EMITS: dict[str, frozenset[str] | None] = {
    "inventory": frozenset(
        {"InventoryReserved", "InventoryReservationFailed", "InventoryReleased", "InventoryReleasedFailed"}
    ),
    "payment": frozenset({"PaymentProcessed", "PaymentFailed", "PaymentRefunded", "PaymentRefundedFailed"}),
    "shipping": frozenset({"ShipmentScheduled", "ShipmentFailed", "ShipmentCancelled", "ShipmentCancelledFailed"}),
    "owner": frozenset({"OrderCompleted", "OrderCancelled"}),
    "projection": None,
}
READY_S = 120.0
STOP_S = 30.0
RESPAWN_GAP_S = 1.0


def reactor(event_type: str) -> str:
    """The participant that acts on ``event_type`` (the owner when nobody else does)."""
    return next((p for p, types in TRIGGERS.items() if event_type in types), "owner")


@dataclass
class ChoreographyDriver(Driver):
    broker: NatsServer | RabbitNode | None = None
    deadline_s: float = 60.0
    worker_concurrency: int = 8
    slots: dict[str, Process] = field(default_factory=dict)
    owner: Process | None = None
    fallback: bool = False  # a rerun of the same file stalled: later owners take the rest
    broker_down: bool = False
    broker_restarts: int = 0
    closing_rerun: bool = False  # also run the same file again after the closing resume
    in_closing: bool = False  # the closing phase: a dead owner is not started again
    _respawned: dict[str, float] = field(default_factory=dict)
    _remainders: int = 0
    _owners: int = 0  # owner `run`s started on the whole file
    _second_kills: set[asyncio.Task[None]] = field(default_factory=set)
    _pending: set[str] = field(default_factory=set)  # slots a second kill waits on
    _after_end_seen: int = 0

    mode = "choreography"

    @property
    def bus(self) -> str:
        assert self.broker is not None
        return self.broker.bus_url

    def _common(self) -> list[str]:
        return ["--bus", self.bus, "--services", self.sandbox.url, "--state-dir", str(self.paths.state_dir)]

    # -- processes -------------------------------------------------------------------------

    async def start_worker(self, slot: str, *, fresh_floor: bool = True) -> Process:
        """A worker in ``slot``; ``fresh_floor`` as for :meth:`start_owner`."""
        participant = slot.split("#")[0]
        process = await self.starter.spawn(
            f"worker-{slot}", "worker", participant, *self._common(), "--concurrency", str(self.worker_concurrency)
        )
        self.slots[slot] = process
        self._respawned[slot] = time.monotonic()
        if fresh_floor:
            self.restarted()
        return process

    async def start_owner(self, *, fresh_floor: bool = True) -> Process:
        """The owner again: on the same file, or after a stalled rerun on what is left.
        ``fresh_floor``: it gets the whole stall limit to show progress (not so when it
        replaces one that died by itself: a process that keeps dying must end in a
        stall, not in a loop)."""
        if fresh_floor:
            self.restarted()
        orders = self.paths.orders
        if self.fallback:
            self.watcher.poll()
            left = tuple(o for o in self.world.orders if o.order_id not in self.watcher.orders)
            if not left:
                self.owner = await self.starter.spawn(
                    "owner-worker", "worker", "owner", *self._common(), "--deadline", f"{self.deadline_s:g}"
                )
                return self.owner
            self._remainders += 1
            orders = self.world.write_orders(self.paths.workdir / f"orders-left-{self._remainders}.jsonl", left)
        else:
            self._owners += 1
        self.owner = await self.starter.spawn(
            "owner",
            "run",
            str(orders),
            "--mode",
            "choreography",
            "--workers",
            "external",
            *self._common(),
            "--deadline",
            f"{self.deadline_s:g}",
            "--concurrency",
            str(self.concurrency),
            "--json",
        )
        return self.owner

    def owner_done(self) -> bool:
        """The owner `run` exited by itself having reported its runs: the batch is over."""
        owner = self.owner
        return owner is not None and owner.role == "owner" and not owner.alive and bool(owner.json_lines())

    async def supervise(self) -> None:
        if self.broker_down:
            return
        await self._check_after_end()
        now = time.monotonic()
        for slot, process in list(self.slots.items()):
            if process.alive or process.killed or process.stopped:
                continue
            if now - self._respawned.get(slot, 0.0) < RESPAWN_GAP_S:
                continue
            self.incident("exit", f"worker {slot} exited {process.returncode} by itself: {process.last_error_line()}")
            await self.start_worker(slot, fresh_floor=False)
        owner = self.owner
        if self.in_closing or owner is None or owner.alive or owner.killed or owner.stopped or self.owner_done():
            return
        if now - self._respawned.get("owner", 0.0) >= RESPAWN_GAP_S:
            self.incident("exit", f"the owner exited {owner.returncode} by itself: {owner.last_error_line()}")
            self._respawned["owner"] = now
            await self.start_owner(fresh_floor=False)

    async def _check_after_end(self) -> None:
        """An event for an order that had already ended is a failure by itself. When a
        rerun of the same file is what acts on ended orders, later owners get only the
        orders not yet placed, so that the rest of the schedule still runs."""
        fresh = self.watcher.after_end[self._after_end_seen :]
        if not fresh:
            return
        self._after_end_seen = len(self.watcher.after_end)
        subject, event_type = fresh[0]
        owner = self.owner
        rerun = owner is not None and owner.role == "owner" and self._owners > 1 and not self.fallback
        self.incident(
            "after-end",
            f"{len(fresh)} event(s) for orders that had ended, e.g. {event_type} for {subject}"
            + ("; the owner rerun on the same file is replaced by one of the orders not yet placed" if rerun else ""),
        )
        if rerun and not self.in_closing:
            await self._replace_owner()

    # -- the schedule ----------------------------------------------------------------------

    async def drive(self, plan: list[PlannedKill]) -> None:
        self.phase("start")
        for participant in PARTICIPANTS:
            for i in (0, 1):
                await self.start_worker(f"{participant}#{i}")
        workers = list(self.slots.values())
        await wait_for(lambda: all("ready on" in w.output() for w in workers), "workers ready", READY_S)
        self.phase("schedule")
        await self.start_owner()
        stalls = 0
        for planned in plan:
            try:
                if not await self.execute(planned):
                    break
                stalls = 0
            except Stalled as exc:
                stalls += 1
                running = self.owner.role if self.owner else "no owner"
                self.incident("stall", f"during {planned.describe()} ({running}): {exc}")
                if stalls > 1:
                    self.incident("aborted", f"two stalls in a row; the schedule stops before kill {planned.index}")
                    break
                await self._replace_owner()
            except Aborted as exc:
                # A budget, not a verdict: the closing phase still finishes and judges every
                # order, and the test asks for most of the planned kills to have happened.
                self.incident("time-limit", f"{exc}; the schedule stops before kill {planned.index}")
                break
        await self.close_schedule()

    async def _replace_owner(self) -> None:
        """After a stall: kill the owner (and any resume), go on with the orders left."""
        for process in self.starter.started:
            if process.role in ("owner", "owner-worker", "resume") and process.alive:
                await process.kill()
        self.fallback = True
        await self.start_owner()

    def batch_over(self) -> bool:
        """The owner `run` finished, or every order has ended."""
        return self.owner_done() or self.all_ended()

    async def reach(self, events: int) -> bool:
        await self.until(lambda: self.watcher.distinct >= events or self.batch_over())
        return not self.batch_over()

    def _slot(self, planned: PlannedKill) -> str:
        """The worker a kill targets; its sibling when a second kill waits on it."""
        slot = f"{planned.target}#{planned.victim}"
        return f"{planned.target}#{1 - planned.victim}" if slot in self._pending else slot

    async def _kill_worker(self, slot: str, kind: KillKind, planned: PlannedKill) -> None:
        participant = slot.split("#")[0]
        await self.kill([self.slots[slot]], kind, planned, TRIGGERS.get(participant, frozenset()))
        await self.start_worker(slot)

    async def _kill_owner(self, kind: KillKind, planned: PlannedKill, *, restart: bool = True) -> None:
        assert self.owner is not None
        await self.kill([self.owner], kind, planned, TRIGGERS["owner"])
        if restart:
            await self.start_owner()

    async def execute(self, planned: PlannedKill) -> bool:
        """One planned kill; False when the batch ended before it could fire."""
        # A kill waits for its point, and for progress since the previous kill: the next
        # kill never lands before the system has moved again.
        if not await self.reach(max(planned.at_events, self.last_kill_events + 1)):
            self.incident("note", "the owner finished (the batch is over) before the schedule did")
            return False
        kind = planned.kind
        if kind is KillKind.RANDOM:
            await self._kill_worker(self._slot(planned), kind, planned)
        elif kind is KillKind.PARTICIPANT:
            victims = [self.slots[f"{planned.target}#{i}"] for i in (0, 1)]
            await self.kill(victims, kind, planned, TRIGGERS[planned.target])
            for i in (0, 1):
                await self.start_worker(f"{planned.target}#{i}")
        elif kind is KillKind.OWNER:
            await self._kill_owner(kind, planned)
        elif kind is KillKind.COMPENSATION:
            armed = self.watcher.compensations
            await self.until(lambda: self.watcher.compensations > armed or self.batch_over())
            if self.batch_over():
                return False
            who = reactor(self.watcher.last_compensation)
            await self.pause(planned.delay_ms)
            if who == "owner":
                await self._kill_owner(kind, planned)
            else:
                await self._kill_worker(f"{who}#{planned.victim}", kind, planned)
        elif kind is KillKind.STARTUP:
            slot = self._slot(planned)
            await self._kill_worker(slot, KillKind.RANDOM, planned)
            if planned.landmark == "spawn":
                await self._kill_worker(slot, kind, planned)
            else:
                self._pending.add(slot)
                self._aside(self._kill_again(slot, planned, kind))
        elif kind is KillKind.DOUBLE:
            slot = self._slot(planned)
            await self._kill_worker(slot, kind, planned)
            self._pending.add(slot)
            self._aside(self._kill_again(slot, planned, kind))
        elif kind is KillKind.RESUME:
            await self._kill_owner(KillKind.OWNER, planned, restart=False)
            resume = await self.start_resume()
            seen = self.watcher.distinct
            if await self.until(lambda: self.watcher.distinct >= seen + planned.resume_events, [resume]):
                await self.kill([resume], kind, planned)
            else:
                self.incident(
                    "missed",
                    f"{planned.describe()}: resume exited {resume.returncode} after "
                    f"{self.watcher.distinct - seen} new events: {resume.last_error_line()}",
                )
            await self.start_owner()
        elif kind is KillKind.BROKER:
            await self.restart_broker(planned)
        else:
            raise ValueError(f"unknown kill kind {kind}")
        return True

    def _aside(self, second_kill: Coroutine[None, None, None]) -> None:
        """Run a second kill beside the schedule: a worker takes seconds to start, and a
        choreography batch does not wait for it, so the schedule does not either."""
        task = asyncio.create_task(second_kill)
        self._second_kills.add(task)
        task.add_done_callback(self._second_kills.discard)

    async def _kill_again(self, slot: str, planned: PlannedKill, kind: KillKind) -> None:
        """Kill the new worker in ``slot`` again: within 0-20 ms of its ready line
        (startup), or within 0-100 ms of its first new event (double)."""
        try:
            await self._wait_and_kill_again(slot, planned, kind)
        finally:
            self._pending.discard(slot)

    async def _wait_and_kill_again(self, slot: str, planned: PlannedKill, kind: KillKind) -> None:
        fresh = self.slots[slot]
        types = EMITS[planned.target]
        seen = self.watcher.emitted(types)
        deadline = time.monotonic() + READY_S

        async def until(condition: Callable[[], bool], what: str) -> bool:
            while not condition():
                if not fresh.alive or self.slots.get(slot) is not fresh or self.batch_over() or self.in_closing:
                    self.incident("missed", f"{planned.describe()}: no {what} before the worker was gone")
                    return False
                if time.monotonic() > deadline:
                    self.incident("missed", f"{planned.describe()}: no {what} within {READY_S:g}s")
                    return False
                await asyncio.sleep(POLL_S)  # polling a condition, bounded by the deadline
            return True

        if not await until(lambda: "ready on" in fresh.output(), "ready line"):
            return
        if kind is KillKind.DOUBLE:
            seen = max(seen, self.watcher.emitted(types))
            if not await until(lambda: self.watcher.emitted(types) > seen, "new event"):
                return
        await self.pause(planned.delay_ms)
        if fresh.alive and self.slots.get(slot) is fresh and not self.in_closing:
            await self._kill_worker(slot, kind, planned)

    async def restart_broker(self, planned: PlannedKill) -> None:
        assert self.broker is not None
        self.broker_down = True
        try:
            await self.kill([], KillKind.BROKER, planned, other=(f"broker ({self.broker.name})", self.broker.kill))
            await self.pause(planned.outage_s * 1000)  # the outage itself
            await self.broker.start()
            self.broker_restarts += 1
        finally:
            self.broker_down = False
            self.restarted()

    # -- the closing phase ------------------------------------------------------------------

    async def start_resume(self) -> Process:
        self.restarted()
        return await self.starter.spawn(
            "resume", "resume", *self._common(), "--concurrency", str(self.concurrency), "--json"
        )

    async def close_schedule(self) -> None:
        """Let the owner finish; `resume`; with ``closing_rerun`` the same file again;
        SIGTERM the workers; read the dead letters and `status`."""
        self.phase("finish")
        if self._second_kills:  # each is bounded by READY_S
            await asyncio.gather(*self._second_kills)
        await self.supervise()  # an owner that died by itself is started again, once more
        self.in_closing = True
        owner = self.owner
        if owner is not None and owner.alive:
            if owner.role == "owner":
                await self.exited(owner, "the last owner of the schedule")
                if owner.returncode and not owner.json_lines():
                    self.incident("exit", f"the owner exited {owner.returncode}: {owner.last_error_line()}")
            else:  # `worker owner` never ends by itself: wait for the orders, then stop it
                try:
                    await self.until(self.all_ended, closing=True)
                except (Stalled, Aborted) as exc:
                    self.incident("hung", f"orders did not end under the owner worker: {exc}")
                await owner.terminate(30.0)
        self.phase("resume")
        self.closing = await self.start_resume()
        self.closing_complete = await self.exited(self.closing, "the closing resume")
        if self.closing_rerun:
            self.phase("rerun")
            self.fallback = False
            self.closing = await self.start_owner()
            self.closing_complete = await self.exited(self.closing, "the closing run of the same file")
        self.phase("stop workers")
        workers = sorted(self.slots.items())
        codes = await asyncio.gather(*(process.terminate(STOP_S) for _, process in workers))
        for (slot, process), code in zip(workers, codes, strict=True):
            if process.killed:
                self.incident("hung", f"worker {slot} did not stop within {STOP_S:g}s of SIGTERM")
            elif code != 0:
                self.incident("exit", f"worker {slot} exited {code} on SIGTERM: {process.last_error_line()}")
        self.phase("status")
        await self.read_dead_letters()
        await self.read_status()

    async def read_dead_letters(self) -> None:
        process = await self.starter.spawn("dead-letters", "dead-letters", "--bus", self.bus, "--json")
        if await self.exited(process, "coordinator dead-letters") and process.returncode == 0:
            self.dead_letters = len(process.json_lines("group"))
        else:
            self.incident("exit", f"coordinator dead-letters exited {process.returncode}: {process.last_error_line()}")
