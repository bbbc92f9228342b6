"""The kernel: workflow definitions, the saga's rules, events and the event log,
results, errors, settings, the step runner both modes share, and the run API.

It imports nothing above it (``agents``, ``tools``, ``graphs``, ``bus``, the lab, the
shell): the layers are checked by import-linter (``.importlinter``).
"""
