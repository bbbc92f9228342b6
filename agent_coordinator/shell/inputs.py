"""Reading workflow inputs from a JSON-lines file, one line at a time.

A batch file may be large (10,000 orders) and may hold anything: bytes that are not
UTF-8, a line nested 100,000 levels deep, a 50 MB customer name. :func:`iter_inputs`
streams it -- one line in memory at a time -- and turns every bad line into an
:class:`InputProblem` naming the line and what is wrong with it, so the good lines
still run and nothing crashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.core.workflow import Workflow

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "InputLine", "InputProblem", "iter_inputs", "read_inputs"]

#: A line (one workflow input) larger than this is refused: every event of a run
#: carries its input, so an unbounded input is an unbounded event log and checkpoint.
DEFAULT_MAX_INPUT_BYTES = 256 * 1024

# Deeper than any real input; far below what makes the JSON parser or pydantic recurse
# out of the interpreter's stack.
_MAX_DEPTH = 64


@dataclass(frozen=True)
class InputProblem:
    """One line of an input file that could not be used, and why."""

    line: int
    message: str


@dataclass(frozen=True)
class InputLine:
    """One valid input and the line it came from."""

    line: int
    item: BaseModel


def _depth_exceeded(text: str, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (strings are skipped)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_line(raw: bytes, max_bytes: int) -> Any:
    """The JSON value of one line, or raise ValueError with a message for the user."""
    if len(raw) > max_bytes:
        raise ValueError(
            f"the line is {len(raw):,} bytes, more than the limit of {max_bytes:,} "
            "(every event of a run carries its input); split or shorten it, or raise --max-input-bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}") from None
    if _depth_exceeded(text, _MAX_DEPTH):
        raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # pragma: no cover - _depth_exceeded refuses such lines first
        raise ValueError("nested too deeply to read") from None


def iter_inputs(
    path: Path,
    workflow: Workflow,
    *,
    context: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> Iterator[InputLine | InputProblem]:
    """Each line of a JSON-lines file as a valid input or as the problems it has.

    Inputs are validated with :meth:`Workflow.validate_input` (``context`` goes to
    the validators, e.g. the known SKUs); an invalid line yields one problem per bad
    field. Blank lines and lines starting with ``#`` are skipped. A line whose
    workflow id repeats an earlier line's is a problem too: two runs cannot share an
    id. Reads one line at a time, so memory does not grow with the file (only the
    ids seen so far are kept). Raises OSError when the file cannot be read at all.
    """
    first_line: dict[str, int] = {}
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            try:
                value = _parse_line(stripped, max_bytes)
            except ValueError as exc:
                yield InputProblem(number, str(exc))
                continue
            try:
                item = workflow.validate_input(value, context=context)
            except InvalidInput as exc:
                for field, message in exc.errors:
                    yield InputProblem(number, f"field `{field}`: {message}")
                continue
            except RecursionError:
                yield InputProblem(number, "nested too deeply to validate")
                continue
            workflow_id = workflow.workflow_id(item)
            if workflow_id in first_line:
                yield InputProblem(
                    number,
                    f"field `{workflow.id_field}`: {workflow_id!r} was already used on line {first_line[workflow_id]}",
                )
                continue
            first_line[workflow_id] = number
            yield InputLine(number, item)


def read_inputs(
    path: Path,
    workflow: Workflow,
    *,
    context: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> tuple[list[BaseModel], list[InputProblem]]:
    """Every valid input of a JSON-lines file and every problem (see :func:`iter_inputs`)."""
    inputs: list[BaseModel] = []
    problems: list[InputProblem] = []
    for entry in iter_inputs(path, workflow, context=context, max_bytes=max_bytes):
        if isinstance(entry, InputLine):
            inputs.append(entry.item)
        else:
            problems.append(entry)
    return inputs, problems
