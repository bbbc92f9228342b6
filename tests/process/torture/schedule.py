"""The kill schedule: which kills, where, in what order -- all drawn from the seed.

A kill fires at a point of the event log, never at a wall-clock time: once the log
holds ``at_events`` distinct events (or, for a kill during compensation, at the
first failure, refund or release event after that point). The only clock in the
schedule is the small seeded delay the issue asks for after an observed moment
(0-20 ms after a compensation event or a session opening, 0-100 ms after a double
kill's first new event) and a broker's outage (1-4 s).

Kinds (one :class:`PlannedKill` may SIGKILL more than once; each SIGKILL is
counted under the kind named in parentheses):

* ``random`` -- kill the process (orchestration: ``run``; choreography: a random
  worker) at a point of the log (random);
* ``startup`` -- kill it at a point (random), start it again and kill the new one
  at start-up: right after spawn, or within 0-20 ms of its session opening
  (its run registered in the log; a worker's ready line) (startup);
* ``compensation`` -- kill within 0-20 ms of the first failure/refund/release
  event after a point; in choreography the process killed is one that reacts to
  that event (compensation);
* ``double`` -- kill at a point, start again, kill again within 0-100 ms of its
  first new event (double, twice);
* ``resume`` -- kill ``run`` (orchestration: random; choreography: owner), start
  ``coordinator resume``, kill it after a few new events (resume);
* choreography only: ``owner`` -- kill the ``run --workers external`` process that
  owns the orders (owner); ``participant`` -- kill every worker of one participant
  at once (participant); ``broker`` -- kill the broker, keep it down 1-4 s, start
  it again on the same port and data (broker).
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AGENTS", "PARTICIPANTS", "KillKind", "PlannedKill", "plan_kills"]

AGENTS = ("inventory", "payment", "shipping")
#: The choreography participants hosted by `coordinator worker` processes.
PARTICIPANTS = (*AGENTS, "projection")
#: Distinct events an order leaves in the log, on average (5 completed, 3-7 compensated).
EVENTS_PER_ORDER = 5


class KillKind(StrEnum):
    RANDOM = "random"
    STARTUP = "startup"
    COMPENSATION = "compensation"
    DOUBLE = "double"
    RESUME = "resume"
    OWNER = "owner"
    PARTICIPANT = "participant"
    BROKER = "broker"


#: How often each kind is drawn, per mode.
MIX: dict[str, dict[KillKind, int]] = {
    "orchestration": {
        KillKind.RANDOM: 30,
        KillKind.STARTUP: 15,
        KillKind.COMPENSATION: 25,
        KillKind.DOUBLE: 15,
        KillKind.RESUME: 15,
    },
    "choreography": {
        KillKind.RANDOM: 20,
        KillKind.STARTUP: 10,
        KillKind.COMPENSATION: 15,
        KillKind.DOUBLE: 10,
        KillKind.PARTICIPANT: 15,
        KillKind.OWNER: 10,
        KillKind.RESUME: 5,
        KillKind.BROKER: 15,
    },
}
#: The share (%) of the batch's expected events over which the kills are spread. A
#: choreography batch goes on while a worker restarts (a startup or double kill waits
#: seconds for it), so its kills are planned into the first half to land before the end.
SPREAD = {"orchestration": 80, "choreography": 50}
#: SIGKILL moments one planned kill makes.
MOMENTS = {KillKind.STARTUP: 2, KillKind.DOUBLE: 2, KillKind.RESUME: 2}


@dataclass(frozen=True)
class PlannedKill:
    """One entry of the schedule."""

    index: int
    kind: KillKind
    at_events: int  # fires once the log holds this many distinct events
    target: str  # choreography: the participant (or "owner") whose process is killed
    victim: int  # which of its workers (0 or 1), when one is killed
    delay_ms: float  # after the observed moment (compensation, startup, double)
    landmark: str  # startup: "spawn" or "session"
    resume_events: int  # resume: new events before `coordinator resume` is killed
    outage_s: float  # broker: how long it stays down

    @property
    def moments(self) -> int:
        return MOMENTS.get(self.kind, 1)

    def describe(self) -> str:
        where = f"at {self.at_events} events"
        if self.kind is KillKind.COMPENSATION:
            return f"{self.kind} after {self.at_events} events, {self.delay_ms:.0f} ms after the next undo event"
        if self.kind is KillKind.STARTUP:
            return f"{self.kind} {self.target} {where}, again at {self.landmark} (+{self.delay_ms:.0f} ms)"
        if self.kind is KillKind.DOUBLE:
            return f"{self.kind} {self.target} {where}, again {self.delay_ms:.0f} ms after its first new event"
        if self.kind is KillKind.RESUME:
            return f"{self.kind}: run {where}, resume after {self.resume_events} new events"
        if self.kind is KillKind.BROKER:
            return f"{self.kind} {where}, down {self.outage_s:.1f}s"
        return f"{self.kind} {self.target} {where}"


def plan_kills(mode: str, kills: int, orders: int, seed: int, only: Collection[str] | None = None) -> list[PlannedKill]:
    """Planned kills making at least ``kills`` SIGKILLs over a batch of ``orders``,
    spread from 2% to :data:`SPREAD` % of the events the batch is expected to log; ``only``
    restricts the kinds drawn (to chase one failure)."""
    if mode not in MIX:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MIX)}")
    mix = {kind: weight for kind, weight in MIX[mode].items() if only is None or kind.value in only}
    if not mix:
        raise ValueError(f"no kill kinds left for {mode}; choose from: {', '.join(k.value for k in MIX[mode])}")
    rng = random.Random(f"torture-schedule-{mode}-{seed}")
    kinds, weights = zip(*mix.items(), strict=True)
    drawn: list[KillKind] = []
    while sum(MOMENTS.get(k, 1) for k in drawn) < kills:
        drawn.append(rng.choices(kinds, weights)[0])
    expected = EVENTS_PER_ORDER * orders
    low, high = max(3, expected // 50), max(expected * SPREAD[mode] // 100, len(drawn) + 4)
    points = sorted(rng.sample(range(low, high), len(drawn)))
    plan = []
    for index, (kind, point) in enumerate(zip(drawn, points, strict=True)):
        target = "run"
        if mode == "choreography":
            target = {
                KillKind.OWNER: "owner",
                KillKind.RESUME: "owner",
                KillKind.BROKER: "broker",
                KillKind.COMPENSATION: "reactor",  # whoever reacts to the undo event seen
            }.get(kind) or rng.choice(AGENTS if kind is KillKind.PARTICIPANT else PARTICIPANTS)
        delay = rng.uniform(0, 100) if kind is KillKind.DOUBLE else rng.uniform(0, 20)
        plan.append(
            PlannedKill(
                index=index,
                kind=kind,
                at_events=point,
                target=target,
                victim=rng.randrange(2),
                delay_ms=round(delay, 1),
                landmark=rng.choice(("spawn", "session")),
                resume_events=rng.randint(1, 24),
                outage_s=round(rng.uniform(1.0, 4.0), 2),
            )
        )
    return plan
