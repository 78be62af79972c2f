"""The atomic-write helper: modes under the umask, stale temps, failing writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from leditspp.files import TEMP_SUFFIX, atomic_write, umask


def write_text(text: str):
    return lambda tmp: tmp.write_text(text)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_mode_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert umask() == mask
        target = atomic_write(tmp_path / "out.png", write_text("new"))
        again = atomic_write(target, write_text("newer"))  # replacing keeps the rule
    finally:
        os.umask(old)
    assert stat.S_IMODE(again.stat().st_mode) == 0o666 & ~mask
    assert again.read_text() == "newer"
    assert temps(tmp_path) == []


def test_temp_of_a_killed_write_is_removed_by_the_next(tmp_path):
    """A write killed by SIGKILL leaves its temp; the next write of the same target removes it."""
    target = tmp_path / "x.inv.safetensors"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from leditspp.files import atomic_write\n"
        "def die(tmp):\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(Path(sys.argv[1]), die)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(target)])
    assert child.wait(timeout=120) == -9
    (left,) = temps(tmp_path)
    assert left.startswith(f".{target.name}.{child.pid}.")
    other = tmp_path / f".other.png.{1 << 22}.abc{TEMP_SUFFIX}"  # another target's temp: not ours to judge
    other.write_text("")
    atomic_write(target, write_text("whole"))
    assert target.read_text() == "whole"
    assert temps(tmp_path) == [other.name]


def test_live_process_temp_is_left_alone(tmp_path):
    target = tmp_path / "out.png"
    live = tmp_path / f".out.png.{os.getppid()}.abc{TEMP_SUFFIX}"  # our parent runs
    live.write_text("being written")
    own_stale = tmp_path / f".out.png.{os.getpid()}.old{TEMP_SUFFIX}"  # our pid, not in flight: an earlier run
    own_stale.write_text("")
    atomic_write(target, write_text("x"))
    assert temps(tmp_path) == [live.name]


def test_failing_writer_leaves_no_temp_and_no_target(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "new.png", fail)
    assert list(tmp_path.iterdir()) == []
    old = atomic_write(tmp_path / "old.png", write_text("old"))
    with pytest.raises(OSError, match="disk full"):
        atomic_write(old, fail)
    assert old.read_text() == "old"
    assert temps(tmp_path) == []
