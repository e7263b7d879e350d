"""`gatherly stack down` and `status` read `<data dir>/stack.json`: what they do when the stack is not as it was
written — a supervisor gone and its parts orphaned, a part's number reused by another process, a part down —
without starting a stack (test_distributed.py starts a real one)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatherly.app.cli import app
from gatherly.app.stack import StackState, alive, stop_stack
from gatherly.kernel.testing import free_port


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a process group of its own (as a detached stack's parts are)."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_down_kills_the_parts_a_killed_supervisor_left_in_its_process_group(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    state = StackState(tmp_path / "stack.json", pid=dead_pid(), pgid=sleeper.pid)
    state.add("kafka", sleeper.pid, free_port())
    said: list[str] = []
    assert stop_stack(tmp_path, said.append)
    assert sleeper.wait(timeout=10) == -9
    assert said == [f"killing pid {sleeper.pid}, still running"]
    assert not state.path.exists()


def test_down_leaves_alone_a_process_that_took_a_parts_number(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    # The stack's group is another one: the pid now names someone else's process.
    state = StackState(tmp_path / "stack.json", pid=dead_pid(), pgid=dead_pid())
    state.add("kafka", sleeper.pid, free_port())
    assert stop_stack(tmp_path, print)
    assert alive(sleeper.pid) and sleeper.poll() is None
    assert not state.path.exists()


def test_down_and_status_when_no_stack_runs(tmp_path: Path) -> None:
    assert not stop_stack(tmp_path, print)
    status = CliRunner().invoke(app, ["stack", "status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 3 and "no stack runs" in status.output
    down = CliRunner().invoke(app, ["stack", "down", "--data-dir", str(tmp_path)])
    assert down.exit_code == 0 and "no stack runs" in down.output


def test_status_names_a_part_that_is_down_and_exits_1(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    state = StackState(tmp_path / "stack.json", pid=sleeper.pid, pgid=sleeper.pid, url="http://localhost:1", ready=True)
    state.add("smtp", sleeper.pid, free_port())  # alive, but nothing listens on its port
    state.add("users", dead_pid(), free_port())
    status = CliRunner().invoke(app, ["stack", "status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 1, status.output
    assert re.search(rf"smtp\s+\S\s+down\s+\S\s+{sleeper.pid}", status.output)
    assert re.search(r"users\s+\S\s+down", status.output)
    assert "0 up, 2 down" in status.output


def test_a_second_detached_up_is_refused_while_one_runs(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    StackState(tmp_path / "stack.json", pid=sleeper.pid, pgid=sleeper.pid).save()
    again = CliRunner().invoke(app, ["stack", "up", "--detach", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "already runs" in " ".join(again.output.split())
