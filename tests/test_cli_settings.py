"""No silent settings: a fast ``--help`` that names the model's recommendation, the start summary,
the warnings and the quiet flag of the command line."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import warnings

import pytest

from leditspp import LeditsError, defaults
from leditspp.cli import RECOMMENDED, _parser, main
from leditspp.evaluation import SUITES
from leditspp.models import RECOMMENDABLE
from leditspp.models.loading import load_pipeline
from leditspp.offload import CHOICES

from .conftest import scene


def test_building_the_parser_imports_neither_torch_nor_diffusers():
    code = "import sys; from leditspp.cli import _parser; _parser(); print({'torch', 'diffusers'} & {*sys.modules})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "set()"


def test_the_parsers_choices_are_the_librarys():
    assert tuple(SUITES) == defaults.SUITES and CHOICES == defaults.OFFLOADS


def _help_of(command: str, dest: str) -> str | None:
    sub = next(a for a in _parser()._subparsers._group_actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    return next((a.help for a in sub._actions if a.dest == dest), None)


@pytest.mark.parametrize("command", ["edit", "invert", "eval"])
def test_help_names_the_models_recommendation_where_it_is_the_default(command):
    for key in RECOMMENDABLE:
        text = _help_of(command, key)
        if text is not None:
            assert RECOMMENDED in text, (command, key, text)
            assert str(RECOMMENDABLE[key]) not in text, (command, key, text)


def test_a_hub_id_offline_and_not_cached_is_refused_at_once(tmp_path, capsys):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    start = time.perf_counter()
    args = ["edit", str(image), "-e", "+hat", "--model", "nobody-here/no-such-model", "-o", str(tmp_path / "o.png")]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'nobody-here/no-such-model' is a Hugging Face hub id that is not reachable and not in the cache" in err
    assert "HF_HUB_OFFLINE is set" in err and "pass a Hugging Face hub id" not in err
    assert time.perf_counter() - start < 20


def test_a_hub_id_without_a_connection_is_refused_without_waiting_for_the_download(monkeypatch):
    import huggingface_hub

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(socket, "create_connection", refused)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LeditsError, match=r"not reachable and not in the cache \(no connection to huggingface.co"):
        load_pipeline("nobody-here/no-such-model", None)


def test_quiet_silences_the_libraries_warnings_while_the_command_runs(sd_folder, tmp_path, monkeypatch, caplog):
    def chatter(*args, **kwargs):
        warnings.warn("hub chatter", UserWarning, stacklevel=1)
        for name in ("huggingface_hub", "diffusers", "transformers"):
            logging.getLogger(name).warning("%s says something", name)

    monkeypatch.setattr("leditspp.cli.edit.edit_batch", chatter)
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    names = ("huggingface_hub", "diffusers", "transformers")
    before = [logging.getLogger(name).level for name in names]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        args = ["edit", str(image), "-e", "+hat", "--model", str(sd_folder), "--quiet", "-o", str(tmp_path / "o.png")]
        assert main(args) == 0
    assert seen == [] and [r.name for r in caplog.records if r.name in names] == []
    assert [logging.getLogger(name).level for name in names] == before  # as the user configured them
