"""What users' own test suites need: pytest fixtures and, beside them, the conformance
suites a backend runs to prove itself.

The fixtures are a pytest plugin, opt-in -- in the root ``conftest.py``::

    pytest_plugins = ["agent_coordinator.testing"]

(or ``pytest -p agent_coordinator.testing``). Loading it imports nothing heavy; see
:mod:`agent_coordinator.testing.plugin` and docs/testing.md.

The conformance suites are modules of their own, imported only by the test modules
that subclass them (docs/testing.md, "Conformance suites"):
:mod:`~agent_coordinator.testing.bus_contract` (``EventBusContract``),
:mod:`~agent_coordinator.testing.event_log_contract` (``EventLogContract``) and
:mod:`~agent_coordinator.testing.participant_store_contract` (``ParticipantStoreContract``).
"""

# The plugin's fixtures and types are this package's surface (pytest loads the package
# as the plugin, so the fixtures must be attributes of it); plugin.__all__ lists them once.
from agent_coordinator.testing.plugin import *  # noqa: F403
from agent_coordinator.testing.plugin import __all__ as __all__
