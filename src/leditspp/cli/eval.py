"""``leditspp eval``: the flags read and handed to :func:`leditspp.evaluation.evaluate`; this
module only says what happened (the bar, the closing lines, the exit code)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import defaults
from ..advice import model_warnings
from ..batch.plan import resolve_settings
from ..evaluation import evaluate, evaluate_models, runner
from ..evaluation.suites import SETTINGS
from ..jobs import RunStats
from ..models import RECOMMENDABLE, model_settings, recommendation_sources
from ..recipes import SETTINGS as RECIPE_SETTINGS
from .options import model_options, ray_options
from .progress import item_progress
from .summary import say_start, say_warnings


def eval_command(args: argparse.Namespace) -> int:
    """Check the suite, its data, settings and metric models, load the model, run every item,
    write the report."""
    stats = RunStats()
    models = [m.strip() for m in args.model.split(",")] if args.model and "," in args.model else []
    if models:
        return _compare_command(args, models, stats)
    options = _options(args, stats, [args.model or defaults.MODEL])
    result = evaluate(args.suite, args.data, args.output, model=args.model, **options)
    if not args.quiet:
        print(f"eval: {stats.line()}", file=sys.stderr)
    out = result.out
    print(f"wrote {out / runner.METRICS_CSV}, {out / runner.SUMMARY_JSON} and {result.report}")
    code, closing = eval_outcome(result.summary)
    if closing:
        print(f"leditspp: {closing}", file=sys.stderr)
    return code


def _say_start(args: argparse.Namespace, model: str) -> None:
    """The model and the settings an evaluation's items use where no --sweep changes them."""
    schema = {key: {**RECIPE_SETTINGS, **RECOMMENDABLE}[key] for key in SETTINGS}
    flags = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    recommended = model_settings(model).get("recommended", {})
    settings, origins = resolve_settings(flags, {}, recommended, recommendation_sources(model), schema=schema)
    say_start(args, model, "flag" if args.model else "default", {k: (settings[k], origins[k]) for k in settings})
    say_warnings(args, model_warnings(model))


def _announcing(args: argparse.Namespace, models: list[str], progress: Any) -> Any:
    """``progress`` that first says the run's start lines for ``models``: once every check that
    needs no model has passed (a refused flag is then the only line the run says)."""
    said: list[str] = []

    def update(done: int, total: int) -> None:
        if not said:
            said.extend(models)
            for model in models:
                _say_start(args, model)
        if progress is not None:
            progress(done, total)

    return update


def _options(args: argparse.Namespace, stats: RunStats, models: list[str]) -> dict[str, Any]:
    """:func:`~leditspp.evaluation.evaluate`'s options from the flags (all but the model); the
    start lines of ``models`` said as the first item is counted."""
    return {
        "options": model_options(args),
        "quiet": args.quiet,
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "sweep": args.sweep,
        "metrics": args.metrics,
        "limit": args.limit,
        "scenes": args.scenes,
        "clip_model": args.clip_model,
        "dino_model": args.dino_model,
        "resume": args.resume,
        "ray": ray_options(args),
        "progress": _announcing(args, models, item_progress(args.quiet, args.suite, stats)),
        "stats": stats,
    }


def _compare_command(args: argparse.Namespace, models: list[str], stats: RunStats) -> int:
    """``--model A,B``: every model checked, then each evaluated into ``OUT/<model>/``, then
    ``OUT/comparison.{md,html}``; the exit code is 1 when some item of some model failed."""
    options = _options(args, stats, models)
    results = evaluate_models(args.suite, args.data, args.output, models, **options)
    if not args.quiet:
        print(f"eval: {stats.line()}", file=sys.stderr)
    for model, result in results.items():
        print(f"{model}: wrote {result.out / runner.SUMMARY_JSON} and {result.report}")
    print(f"wrote {args.output}/comparison.md and comparison.html")
    outcomes = [eval_outcome(r.summary) for r in results.values()]
    for (_, closing), model in zip(outcomes, results, strict=True):
        if closing:
            print(f"leditspp: {model}: {closing}", file=sys.stderr)
    return max(code for code, _ in outcomes)


def eval_outcome(summary: dict[str, Any]) -> tuple[int, str]:
    """The exit code of an ``eval`` run and its closing line: 0 when every item was measured, 1
    when some failed (the line counts them; when every item failed nothing was measured, so no
    number in the report stands for the benchmark)."""
    failed, total = summary["failed"], summary["items"]
    if not failed:
        return 0, ""
    if failed < total:
        return 1, f"{failed} of {total} items failed (the others are measured); see summary.json"
    first = summary["errors"][0]
    return 1, (
        f"every item failed ({failed} of {total}), so nothing was measured; the first, {first['item']}: "
        f"{first['error']} (all errors: summary.json)"
    )
