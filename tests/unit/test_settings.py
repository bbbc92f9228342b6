"""Run settings (core/settings.py): defaults, what is refused, and backoff delays
that are bounded and reproducible."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent_coordinator.core.settings import STATE_DIR_VARIABLE, Backoff, RunSettings, default_state_dir


def test_stopping_is_the_default_policy() -> None:
    assert RunSettings().on_model_unavailable == "stop"
    with pytest.raises(ValueError, match="on_model_unavailable"):
        RunSettings(on_model_unavailable="retry-forever")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_reasks", -1), ("step_timeout", 0), ("step_timeout", -1.0)],
)
def test_settings_that_cannot_work_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        RunSettings.model_validate({field: value})


@pytest.mark.parametrize(("field", "value"), [("max_attempts", 0), ("multiplier", 0.5), ("jitter", 1.5)])
def test_a_backoff_that_cannot_work_is_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        Backoff.model_validate({field: value})


def test_a_backoff_grows_to_its_bound_and_repeats_itself_for_the_same_call() -> None:
    backoff = Backoff(initial_delay=1.0, multiplier=2.0, max_delay=4.0, jitter=0.5)
    delays = [backoff.delay(n, key="o-1/payment/charge") for n in range(1, 6)]
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert delays == [backoff.delay(n, key="o-1/payment/charge") for n in range(1, 6)]
    assert backoff.delay(1, key="o-2/payment/charge") != delays[0]  # concurrent retries spread out
    assert Backoff(jitter=0).delay(3, key="any") == Backoff().initial_delay * 4


def test_the_state_directory_comes_from_the_environment_else_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(STATE_DIR_VARIABLE, raising=False)
    assert str(default_state_dir()) == ".coordinator"
    monkeypatch.setenv(STATE_DIR_VARIABLE, "/srv/state")
    assert str(default_state_dir()) == "/srv/state"
