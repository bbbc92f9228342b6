"""The travel example of docs/guide.md: a trip booked by three agents (flight, hotel,
car), cancelled in reverse when a booking fails. ``coordinator run
examples/travel/trips.jsonl --workflow agent_coordinator.examples.travel:app``."""

from .app import app

__all__ = ["app"]
