"""Reading an input file: every bad line is named, the good ones are read, nothing crashes."""

from __future__ import annotations

import json
from pathlib import Path

from agent_coordinator.examples.orders.app import ORDER_FULFILMENT
from agent_coordinator.shell.inputs import InputProblem, read_inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
GOOD = (EXAMPLES / "orders.jsonl").read_text().splitlines()[0]


def read(path: Path, **options: int) -> tuple[list[str], list[InputProblem]]:
    inputs, problems = read_inputs(path, ORDER_FULFILMENT, **options)
    return [ORDER_FULFILMENT.workflow_id(i) for i in inputs], problems


def test_a_line_that_is_not_utf8_is_named_and_the_others_are_read(tmp_path: Path) -> None:
    second = json.dumps(dict(json.loads(GOOD), order_id="o-2"))
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"order_id": "o-\xff"}\n' + second.encode() + b"\n")
    ids, problems = read(path)
    assert ids == ["o-1001", "o-2"]
    assert problems == [InputProblem(2, "not UTF-8: byte 0xff at column 17")]


def test_a_line_nested_100000_levels_deep_is_named(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + GOOD + "\n")
    ids, problems = read(path)
    assert ids == ["o-1001"]
    assert problems == [InputProblem(1, "nested more than 64 levels deep")]


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    order = json.loads(GOOD)
    order["customer"] = "[[[[" * 40 + '\\"{'
    path = tmp_path / "brackets.jsonl"
    path.write_text(json.dumps(order) + "\n")
    ids, problems = read(path)
    assert problems == [] and ids == ["o-1001"]


def test_a_line_above_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    # Padded with spaces: every field of an order is bounded far below the line limit.
    big = GOOD.replace(", ", "," + " " * 30_000)
    path = tmp_path / "big.jsonl"
    path.write_text(big + "\n" + json.dumps(dict(json.loads(GOOD), order_id="o-2")) + "\n")
    ids, problems = read(path)
    assert ids == ["o-2"]
    assert len(problems) == 1 and problems[0].line == 1
    assert "more than the limit of 262,144" in problems[0].message
    ids, problems = read(path, max_bytes=1_000_000)
    assert ids == ["o-1001", "o-2"] and problems == []
