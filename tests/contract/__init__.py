"""Contract suites: one behavioural test suite per seam, run against every backend."""
