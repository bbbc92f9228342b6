"""Benchmarks: coordination cost, model calls and scaling, against references, in one run.

``python -m benchmarks`` runs every scenario in its own process, in interleaved
rounds, and prints one table of medians with ratios to the reference
implementations measured in the same run. The method and the scenarios are in
``docs/benchmarks.md``.

Modules:

* :mod:`benchmarks.registry` -- every scenario by name (family x workload); add one here;
* :mod:`benchmarks.scenario` -- runs one scenario in this process, prints its JSON;
* :mod:`benchmarks.harness` -- rounds of scenario processes; medians and ratios;
* :mod:`benchmarks.report` -- the table, the issue's targets, Markdown and JSON;
* :mod:`benchmarks.measure` -- the driver, the counters, the measurement of one run;
* :mod:`benchmarks.workload` -- the orders, the sandbox world, the fake model;
* :mod:`benchmarks.apps` -- the application under test for a request;
* :mod:`benchmarks.synthetic` -- generated workflows of N steps;
* :mod:`benchmarks.references` -- R1 (asyncio saga), R2/R2s (prebuilt LangGraph), R3 (brokers);
* :mod:`benchmarks.ours` -- our orchestration and choreography through the public API;
* :mod:`benchmarks.backends` -- checkpointers and buses by name, skipping when unavailable.
"""
