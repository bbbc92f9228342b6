"""The torture harness at CI size: 300 orders and 20 kills per backend (docs/torture.md).

Each test runs the batch through real `coordinator` processes against a served
sandbox, SIGKILLs them on the seeded schedule (choreography: also the owner, whole
participants, and a broker of the harness's own), closes with `resume` (and, for
orchestration, the same `run` again), and asserts what the independent checker
found: nothing stranded, misreported, duplicated or forked; money and stock add
up; no process hung or died by itself. The full report is printed (``pytest -s``,
or in the failure message). The large run (>= 1,000 orders, >= 40 kills) is for the
command line: ``python -m tests.process.torture --backend all``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.process.torture.brokers import broker_missing
from tests.process.torture.harness import TortureConfig, TortureReport, run_torture
from tests.process.torture.report import render
from tests.services import POSTGRES_URL, require_service, services_required

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: The CI size. Choreography's deadline is short so that a lost chain is failed (and
#: a stall declared) within the test's time. The schedule has no time limit: it ends
#: with the batch, a hang is a stall (no new event for stall_s), and pytest's timeout
#: bounds the rest -- a limit in seconds made the RabbitMQ run fail on a machine whose
#: broker restarts are slow, with every order consistent.
CI = {
    "orders": 300,
    "kills": 20,
    "seed": 7,
    "concurrency": 24,
    "latency_ms": 4.0,
    "stall_s": 15.0,
    "deadline_s": 10.0,
    "time_limit_s": None,
}


def require_broker(name: str) -> None:
    """Skip (or, under REQUIRE_SERVICES=1, fail) when a broker of ``name`` cannot be started here."""
    missing = broker_missing(name)
    if missing is None:
        return
    reason = f"cannot start a {name} broker of the harness's own: {missing}"
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


async def torture(backend: str, tmp_path: Path, **overrides: object) -> TortureReport:
    config = TortureConfig(backend=backend, workdir=tmp_path / backend, **{**CI, **overrides})  # type: ignore[arg-type]
    report = await run_torture(config)
    print(render([report]))
    return report


def assert_survived(report: TortureReport) -> None:
    failures = []
    if not report.passed:
        failures.append("the checker or the harness found failures")
    if len(report.kills) < 0.9 * report.config.kills:
        failures.append(f"only {len(report.kills)} of {report.config.kills} kills happened before the batch ended")
    message = "; ".join(failures) + "\n" + render([report])
    assert not failures, message


async def test_orchestration_on_sqlite_survives_twenty_kills_of_every_kind(tmp_path: Path) -> None:
    assert_survived(await torture("sqlite", tmp_path))


@pytest.mark.services
async def test_orchestration_on_postgresql_survives_twenty_kills_of_every_kind(tmp_path: Path) -> None:
    require_service("postgresql")
    assert_survived(await torture("postgresql", tmp_path, postgres_url=POSTGRES_URL))


@pytest.mark.services
async def test_choreography_on_rabbitmq_survives_kills_of_owner_participants_and_broker(tmp_path: Path) -> None:
    require_broker("rabbitmq")
    assert_survived(await torture("rabbitmq", tmp_path))


@pytest.mark.services
async def test_choreography_on_nats_survives_kills_of_owner_participants_and_broker(tmp_path: Path) -> None:
    require_broker("nats")
    assert_survived(await torture("nats", tmp_path))
