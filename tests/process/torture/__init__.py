"""The crash-test ("torture") harness of issue 10: `python -m tests.process.torture --help`.

It runs a batch of orders through real `coordinator` processes against services
served by another process, SIGKILLs them on a seeded schedule (and restarts the
broker it started itself), then judges the outcome with an independent checker of
the services' state and the event log. See docs/torture.md.
"""
