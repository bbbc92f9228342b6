"""What users' own test suites need: pytest fixtures and, beside them, the conformance
suites a backend runs to prove itself.

The fixtures are a pytest plugin, opt-in -- in the root ``conftest.py``::

    pytest_plugins = ["agent_coordinator.testing"]

(or ``pytest -p agent_coordinator.testing``). Loading it imports nothing heavy; see
:mod:`agent_coordinator.testing.plugin` and docs/testing.md.
"""

from agent_coordinator.testing.plugin import (
    RECORD_OPTION,
    ReplayingModelFactory,
    ScriptedModelFactory,
    app_environment,
    fake_model,
    memory_bus,
    pytest_addoption,
    replaying_model,
    scripted_model,
    workflow_app,
)

__all__ = [
    "RECORD_OPTION",
    "ReplayingModelFactory",
    "ScriptedModelFactory",
    "app_environment",
    "fake_model",
    "memory_bus",
    "pytest_addoption",
    "replaying_model",
    "scripted_model",
    "workflow_app",
]
