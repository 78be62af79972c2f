"""The library leaves the process's logging as its user set it: ``evaluate()`` and ``edit_batch()``
change no logger for good (``quiet=`` only while they run), the command line hushes diffusers'
and transformers' loading only while a command runs, and a Ray worker logs as its driver."""

from __future__ import annotations

import logging

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from leditspp.batch import BatchEdit, edit_batch, plan_edits
from leditspp.cli import main
from leditspp.demo.shapes import scene
from leditspp.distributed import Worker
from leditspp.evaluation import evaluate
from leditspp.logs import LoggingState
from leditspp.model_options import ModelOptions

LIBRARIES = (diffusers_logging, transformers_logging)


@pytest.fixture
def user_logging():
    """The user's own logging: the libraries at INFO with their bars, leditspp at DEBUG; put back after."""
    before = LoggingState.now()
    for library in LIBRARIES:
        library.set_verbosity_info()
        library.enable_progress_bar()
    logging.getLogger("leditspp").setLevel(logging.DEBUG)
    yield LoggingState.now()
    before.apply()


def test_evaluate_and_edit_batch_leave_the_processs_logging_as_the_user_set_it(user_logging, tmp_path):
    cpu = ModelOptions(device="cpu")
    settings = {"steps": 2}
    evaluate("shapes", None, tmp_path / "eval", options=cpu, settings=settings, scenes=1, limit=1, quiet=True)
    assert LoggingState.now() == user_logging
    image = tmp_path / "in.png"
    scene(0, 64).image.save(image)
    batch = BatchEdit(images=(str(image),), output=str(tmp_path / "out.png"), edits=("+blue circle",), options=cpu)
    assert edit_batch(plan_edits(batch)).done == 1
    assert LoggingState.now() == user_logging
    assert user_logging.levels["diffusers"] == logging.INFO and user_logging.bars == (True, True)


def test_quiet_keeps_leditspps_logger_to_errors_only_while_the_batch_runs(user_logging, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("leditspp.batch.run._edit_batch", lambda *a: seen.append(logging.getLogger("leditspp").level))
    image = tmp_path / "in.png"
    scene(0, 64).image.save(image)
    edit_batch(plan_edits(BatchEdit(images=(str(image),), output=str(tmp_path / "out.png"), quiet=True)))
    assert seen == [logging.ERROR] and logging.getLogger("leditspp").level == logging.DEBUG


def test_the_command_line_hushes_loading_only_while_a_command_runs(user_logging, monkeypatch, tmp_path):
    seen = []

    def command(args):
        seen.append(LoggingState.now())
        return 0

    monkeypatch.setattr("leditspp.cli.invert.invert_command", command)
    assert main(["invert", "in.png", "-o", str(tmp_path / "in.safetensors")]) == 0
    (during,) = seen
    assert during.bars == (False, False)
    assert during.levels == {**user_logging.levels, "diffusers": logging.ERROR, "transformers": logging.ERROR}
    assert LoggingState.now() == user_logging


def test_a_ray_worker_logs_as_the_process_that_started_it(user_logging):
    driver = LoggingState(
        {"leditspp": logging.ERROR, "diffusers": logging.ERROR, "transformers": logging.ERROR}, (False, True)
    )
    Worker(lambda: None, lambda editor: lambda item: item, logs=driver)  # here, in place of the worker's process
    assert LoggingState.now() == driver
