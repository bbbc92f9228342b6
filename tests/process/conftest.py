"""The process suite: tests that start, kill and restart real processes (coordinator
runs, workers, brokers). They take minutes and depend on process start-up, so every
test here is marked ``slow``: the default ``pytest`` leaves them out, ``pytest -m
slow`` (and ``.ci/run``) runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)
