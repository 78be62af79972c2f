"""``leditspp edit``: the flags read into a :class:`~leditspp.batch.BatchEdit`, planned and run by
:mod:`leditspp.batch`; this module only says what happens (lines, bars, the exit code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..batch import BatchEdit, edit_batch, plan_edits
from ..jobs import RunStats
from ..recipes import SETTINGS
from .options import ray_options
from .progress import item_progress, step_progress


def edit_command(args: argparse.Namespace) -> int:
    """Check everything that is cheap to check, then edit every input (in this process with the
    model loaded once, or on Ray workers); each output written, atomically, as it is done.

    One input: any problem is the command's error (exit 2). Several: an input that fails is
    reported, recorded in ``OUT/edit-log.csv`` and the others go on (exit 1 at the end)."""
    ray = ray_options(args)
    plan = plan_edits(_batch(args), ray)
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
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        quiet=args.quiet,
        offload=args.offload,
        base=args.base,
        loras=tuple(args.lora),
    )


def _say_failed(path: str | Path | None, error: str) -> None:
    print(f"leditspp: {path} failed: {error}".replace(f"failed: {path}: ", "failed: "), file=sys.stderr)
