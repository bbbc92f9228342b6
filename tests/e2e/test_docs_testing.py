"""docs/testing.md shows tests/e2e/test_plugin_example.py verbatim, so the documented example
is exactly the one CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_example_is_the_tested_one() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text()
    example = (ROOT / "tests" / "e2e" / "test_plugin_example.py").read_text()
    assert f"```python\n{example}```" in doc, "copy tests/e2e/test_plugin_example.py into docs/testing.md again"


def test_the_documented_conformance_example_is_the_tested_one() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text()
    example = (ROOT / "tests" / "contract" / "test_example_contract.py").read_text()
    assert f"```python\n{example}```" in doc, "copy tests/contract/test_example_contract.py into docs/testing.md again"
