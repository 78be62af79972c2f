"""No silent settings: a fast ``--help`` that names the model's recommendation, the start summary,
the warnings and the quiet flag of the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leditspp import defaults
from leditspp.cli import RECOMMENDED, _parser
from leditspp.evaluation import SUITES
from leditspp.models import RECOMMENDABLE
from leditspp.offload import CHOICES


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
