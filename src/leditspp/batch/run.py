"""Running a planned batch edit: each job inverted (unless it is a saved inversion) and edited,
here with the editor loaded once or on Ray workers that each load their own; every output
written here, atomically, as it is done."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..io import open_image
from ..jobs import ComputeItem, Item, MapItems, Outcome, RunStats, serial_map
from ..logs import quiet_logs
from .outputs import EDIT_LOG, EditLog, File, output_files, output_recipe, save_files
from .plan import BatchEdit, EditPlan, Job

#: ``progress(stage, done, total)`` of one inversion or edit, as the editor reports it.
StepProgress = Callable[[str, int, int], None]


def edit_batch(
    plan: EditPlan,
    *,
    stats: RunStats | None = None,
    progress: Callable[[int, int], None] | None = None,
    step_progress: StepProgress | None = None,
    on_written: Callable[[Path], None] | None = None,
    on_failed: Callable[[str | None, str], None] | None = None,
) -> RunStats:
    """Edit every job of ``plan`` (:func:`~leditspp.batch.plan_edits`); returns the counts.

    One input: its error is raised. Several: an input that fails is told to ``on_failed(input,
    error)``, recorded in ``OUT/edit-log.csv`` and the others go on. ``progress(done, total)``
    follows the inputs, ``step_progress`` the steps of each (in this process), ``on_written`` each
    file written. With ``plan.batch.quiet``, only errors from leditspp's logger while it runs."""
    with quiet_logs(plan.batch.quiet):
        return _edit_batch(plan, stats, progress, step_progress, on_written, on_failed)


def _edit_batch(
    plan: EditPlan,
    stats: RunStats | None,
    progress: Callable[[int, int], None] | None,
    step_progress: StepProgress | None,
    on_written: Callable[[Path], None] | None,
    on_failed: Callable[[str | None, str], None] | None,
) -> RunStats:
    stats = stats if stats is not None else RunStats()
    stats.total, stats.skipped = len(plan.jobs) + plan.finished + len(plan.refused), plan.finished
    log = EditLog(Path(plan.batch.output) / EDIT_LOG) if plan.several else None

    def failed(path: str | None, error: str) -> None:
        if on_failed is not None:
            on_failed(path, error)
        if log is not None:
            log.add(path, None, "failed", error, 0.0)

    for path, error in plan.refused:
        failed(path, error)
        stats.failed += 1
    items = [Item(str(job.out), "edit", "", data=job) for job in plan.jobs]  # each input its own group
    if progress is not None:
        progress(stats.failed + stats.skipped, stats.total)
    with _mapper(plan, stats, step_progress) as map_items:
        start = time.perf_counter()
        for outcome in map_items(items):
            job = outcome.item.data
            if outcome.error:
                failed(job.path or plan.batch.inversion, outcome.error)
            else:
                save_files(outcome.row, on_written)
                if log is not None:
                    log.add(job.path, job.out, "done", "", outcome.seconds)
            stats.count(outcome.error, start)
            if progress is not None:
                progress(stats.done + stats.failed + stats.skipped, stats.total)
    return stats


@contextlib.contextmanager
def _mapper(plan: EditPlan, stats: RunStats, step_progress: StepProgress | None) -> Iterator[MapItems]:
    """How the jobs are computed: on Ray (each worker loads the model once; images read here and
    shipped), or here with the model loaded on first use (one input: its error is the run's)."""
    if plan.ray is not None and plan.jobs:  # (nothing to do: no Ray to start)
        from ..distributed import ray_backend, ray_map

        with ray_backend(plan.ray.address, plan.ray.env()):
            yield ray_map(
                functools.partial(plan.batch.options.load, plan.model),
                functools.partial(renderer, plan.batch, plan.model),
                workers=plan.ray.workers,
                stats=stats,
                prepare=_ship_job,
            )
        return

    def in_process(items: Sequence[Item]) -> Iterator[Outcome]:
        if not items:
            return
        render = renderer(plan.batch, plan.model, plan.batch.options.load(plan.model), step_progress)
        if plan.several:
            yield from serial_map(render)(items)
        else:  # no catching: the one input's problem is the run's error
            yield from (Outcome(item, render(item), "", 0.0) for item in items)

    yield in_process


def _ship_job(item: Item) -> Item:
    """On the driver, just before a Ray worker gets the job: its image read, to travel with it."""
    job = item.data
    if isinstance(job.source, str):
        job = replace(job, source=open_image(job.source))
    return replace(item, data=job)


def renderer(batch: BatchEdit, model: str, editor: Any, bar: StepProgress | None = None) -> ComputeItem:
    """item (a job) → the files to write, as (path, image, metadata); on a Ray worker or here."""

    def render(item: Item) -> list[File]:
        job = item.data
        inversion, result = _edit_job(editor, batch, job, bar)
        recipe = output_recipe(job, model, inversion.info, batch.inversion)
        return output_files(job, result, recipe, batch.masks)

    return render


def _edit_job(editor: Any, batch: BatchEdit, job: Job, bar: StepProgress | None) -> tuple[Any, Any]:
    """Invert the job's image (unless it is a saved inversion) and edit it: (inversion, result)."""
    if job.path is None:
        inversion = job.source
    else:
        image = open_image(job.source) if isinstance(job.source, str) else job.source
        inversion = invert(editor, image, job.settings, bar, batch.max_pixels)
    if batch.save_inversion:
        inversion.save(batch.save_inversion)
    result = editor.edit(
        inversion,
        job.edits,
        mask_mode=job.settings["mask_mode"],
        user_mask=batch.user_mask,
        guidance_rescale=job.settings["guidance_rescale"],
        preserve=job.settings["preserve"],
        progress=bar,
    )
    return inversion, result


def invert(editor: Any, image: Any, settings: dict[str, Any], bar: StepProgress | None, max_pixels: int | None) -> Any:
    """``editor.invert`` of ``image`` with the resolved ``settings`` (:func:`~.plan.resolve_settings`)."""
    return editor.invert(
        image,
        steps=settings["steps"],
        skip=settings["skip"],
        solver=settings["solver"],
        seed=settings["seed"],
        source_prompt=settings["source_prompt"],
        source_guidance=settings["source_guidance"],
        negative_prompt=settings["negative_prompt"],
        height=settings["height"],
        width=settings["width"],
        max_pixels=max_pixels,
        progress=bar,
    )
