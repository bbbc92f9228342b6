"""The lab: faults, invariants and the measured comparison of the two modes, built on
top of everything else (``coordinator compare``; see docs/faults.md)."""
