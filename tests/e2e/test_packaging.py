"""What is installed: one import name of our own, every package of it, nothing that
collides with another distribution's names."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders() -> dict[str, Path]:
    """Every package the mapped folders hold, by import name."""
    found: dict[str, Path] = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            if "__pycache__" not in parts:
                found[".".join([name, *parts])] = init.parent
    return found


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    # A package missing from the explicit list would be left out of the wheel silently.
    assert sorted(package_folders()) == sorted(SETUPTOOLS["packages"])


def test_everything_installs_under_one_name_of_our_own() -> None:
    assert {name.split(".")[0] for name in SETUPTOOLS["packages"]} == {"agent_coordinator"}


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_installs_beside_openai_agents_and_outlives_its_removal(tmp_path: Path) -> None:
    # openai-agents installs the top-level name `agents`, as this project once did: with
    # both in one environment each must import, and removing it must leave us whole.
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("agent_coordinator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("agent_coordinator-")} == {"agent_coordinator"}
    assert "agent_coordinator/examples/orders/orders.jsonl" in names and "agent_coordinator/py.typed" in names
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, coordinator = env_dir / "bin" / "python", env_dir / "bin" / "coordinator"
    quiet = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    installed = run(python, "-m", "pip", "install", "-q", wheel, "openai-agents", cwd=tmp_path, env=quiet)
    assert installed.returncode == 0, installed.stderr[-3000:]
    both = run(python, "-c", "import agents, agent_coordinator.shell.cli; print(agents.Agent.__module__)", cwd=tmp_path)
    assert both.returncode == 0 and both.stdout.startswith("agents"), both.stderr
    orders = ROOT / "examples" / "orders" / "orders.jsonl"
    state = ["--state-dir", str(tmp_path / "state")]
    first = run(coordinator, "run", orders, "--json", *state, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count('"status": "completed"') == 5
    removed = run(python, "-m", "pip", "uninstall", "-q", "-y", "openai-agents", cwd=tmp_path, env=quiet)
    assert removed.returncode == 0, removed.stderr
    still = run(
        coordinator,
        "run",
        orders,
        "--mode",
        "choreography",
        "--json",
        "--state-dir",
        str(tmp_path / "s2"),
        cwd=tmp_path,
    )
    assert still.returncode == 0, still.stderr[-3000:]
    assert still.stdout.count('"status": "completed"') == 5
