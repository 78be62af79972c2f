"""``leditspp edit``: the flags read into a :class:`~leditspp.batch.BatchEdit`, planned and run by
:mod:`leditspp.batch`; this module only says what happens (lines, bars, the exit code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..batch import BatchEdit, EditPlan, edit_batch, plan_edits
from ..jobs import RunStats
from ..recipes import INVERSION_SETTINGS, SETTINGS
from .options import model_options, ray_options
from .progress import item_progress, step_progress
from .summary import say_start, say_warnings


def edit_command(args: argparse.Namespace) -> int:
    """Check everything that is cheap to check, then edit every input (in this process with the
    model loaded once, or on Ray workers); each output written, atomically, as it is done.

    One input: any problem is the command's error (exit 2). Several: an input that fails is
    reported, recorded in ``OUT/edit-log.csv`` and the others go on (exit 1 at the end)."""
    ray = ray_options(args)
    plan = plan_edits(_batch(args), ray)
    _say_start(args, plan)
    say_warnings(args, plan.warnings)
    if not args.quiet:
        for out, difference in plan.stale:
            print(f"leditspp: resume: {out} was made with {difference}; editing it again", file=sys.stderr)
    stats = RunStats()
    bar = item_progress(args.quiet or not (plan.several or ray), "edit", stats)
    edit_batch(
        plan,
        stats=stats,
        progress=bar,
        step_progress=step_progress(args.quiet),
        on_written=None if bar else lambda path: print(f"wrote {path}"),
        on_failed=_say_failed,
    )
    if not args.quiet and (plan.several or ray is not None):
        print(f"edit: {stats.line()}", file=sys.stderr)
    return 1 if stats.failed else 0


def _say_start(args: argparse.Namespace, plan: EditPlan) -> None:
    """The model and the first input's settings (per-image recipe entries may change others'); a
    saved inversion's own where it fixes them (its seed is not recorded)."""
    job = next(iter(plan.jobs), None)
    sourced = {k: (v, job.origins[k]) for k, v in job.settings.items() if k != "model"} if job else {}
    if job is not None and job.path is None:
        fixed = [key for key in INVERSION_SETTINGS if key != "seed"]
        where = f"inversion {plan.batch.inversion}"
        sourced = {k: v for k, v in sourced.items() if k != "seed"} | {
            key: (getattr(job.source.info, key), where) for key in fixed
        }
    model, origin = plan.chosen["model"]
    say_start(args, model, origin, sourced | {k: v for k, v in plan.chosen.items() if k != "model"})


def _batch(args: argparse.Namespace) -> BatchEdit:
    """The edit's flags as a value."""
    return BatchEdit(
        images=tuple(args.images),
        output=args.output,
        edits=tuple(args.edit),
        recipe=args.recipe,
        inversion=args.inversion,
        save_inversion=args.save_inversion,
        masks=args.masks,
        resume=args.resume,
        overwrite_inputs=args.overwrite_inputs,
        settings={key: getattr(args, key) for key in SETTINGS if key != "model"},
        scale=args.scale,
        threshold=args.threshold,
        warmup=args.warmup,
        cooldown=args.cooldown,
        user_mask=args.user_mask,
        max_pixels=args.max_pixels,
        model=args.model,
        options=model_options(args),
        quiet=args.quiet,
    )


def _say_failed(path: str | Path | None, error: str) -> None:
    print(f"leditspp: {path} failed: {error}".replace(f"failed: {path}: ", "failed: "), file=sys.stderr)
