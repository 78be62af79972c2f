"""Crashes that became one clear line: a full disk in ``edit``, ``invert`` and ``--save-inversion``,
a file name that is not UTF-8 in a folder edit, and ``--ray local`` with ``RAY_ADDRESS`` set."""

from __future__ import annotations

import errno
import os

import pytest

from leditspp.batch.outputs import EditLog
from leditspp.cli import main
from leditspp.distributed import init_options

from .conftest import scene


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails as on a full disk (the rename of its temp file, the last step)."""

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("leditspp.files.os.replace", replace)


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["edit", "{image}", "-e", "+hat", "-o", "{out}/out.png"], "out.png"),
        (["invert", "{image}", "-o", "{out}/in.inv.safetensors"], "in.inv.safetensors"),
        (
            ["edit", "{image}", "-e", "+hat", "-o", "{out}/o.png", "--save-inversion", "{out}/s.inv.safetensors"],
            "s.inv",
        ),
    ],
)
def test_a_full_disk_is_one_clear_line(sd_folder, tmp_path, capsys, full_disk, command, target):
    scene().save(tmp_path / "in.png")
    argv = [a.format(image=tmp_path / "in.png", out=tmp_path) for a in command]
    assert main([*argv, "--model", str(sd_folder), "--steps", "2", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err, err
    assert f"cannot write {tmp_path}/{target}" in err and "No space left on device" in err and "free space" in err
    assert not list(tmp_path.glob("*.leditspp-tmp")) and not list(tmp_path.glob(".*leditspp-tmp"))


def test_a_file_name_that_is_not_utf8_is_logged_and_the_folder_edit_goes_on(tmp_path):
    log = EditLog(tmp_path / "edit-log.csv")
    name = os.fsdecode(b"in/b\xff.png")  # how Python holds such a name: a lone surrogate
    log.add(name, tmp_path / os.fsdecode(b"b\xff.png"), "done", "", 1.0)
    log.add("in/c.png", tmp_path / "c.png", "done", "", 1.0)
    lines = (tmp_path / "edit-log.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and "in/b\\xff.png" in lines[1] and "in/c.png" in lines[2]


def test_ray_local_starts_a_runtime_here_whatever_ray_address_says(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head-node:6379")
    assert init_options("local")["address"] == "local"  # Ray reads RAY_ADDRESS only for None or "auto"
