"""One evaluation from Python: a suite planned and checked, the editor loaded (here or on Ray
workers), every item run through :mod:`.runner`, and the report written.

    from leditspp.evaluation import evaluate
    result = evaluate("shapes", None, "out/", model="demo", scenes=2)
    result.summary["per_edit_type"]["remove"]["success"]

``leditspp eval`` is this function behind flags; :func:`evaluate_models` runs several models on
one suite and writes them side by side (``leditspp eval shapes --model demo,demo-flow``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import defaults
from ..distributed import RayOptions
from ..errors import LeditsError, check_arguments
from ..files import check_writable_folder
from ..jobs import RunStats
from ..logs import quiet_logs
from ..model_options import ModelOptions
from ..models import RECOMMENDABLE, model_settings
from ..models.loading import check_model_name
from . import report, runner
from .compare import write_comparison
from .photo_suite import PhotoSuite
from .shapes_suite import ShapesSuite
from .suites import SETTINGS, Plan, Request, Suite

#: The suites by name: ``evaluate(name, …)`` and ``leditspp eval NAME``.
SUITES: dict[str, Suite] = {
    "shapes": ShapesSuite(),
    "tedbench": PhotoSuite("tedbench"),
    "piebench": PhotoSuite("piebench"),
}


@dataclass(frozen=True)
class Evaluation:
    """What a run wrote: its folder, the summary (as ``summary.json``), the report's path and the
    counts of what was done, failed, skipped and retried."""

    out: Path
    summary: dict[str, Any]
    report: Path
    stats: RunStats


def evaluate(
    suite: str,
    data: str | None = None,
    out: str | Path = "eval",
    *,
    model: str | None = None,
    options: ModelOptions | None = None,
    quiet: bool = False,
    settings: Mapping[str, Any] | None = None,
    sweep: Mapping[str, Sequence[float]] | Sequence[str] = (),
    metrics: str | Sequence[str] | None = None,
    limit: int | None = None,
    scenes: int | None = None,
    clip_model: str | None = None,
    dino_model: str | None = None,
    resume: bool = False,
    ray: RayOptions | None = None,
    progress: runner.Progress | None = None,
    stats: RunStats | None = None,
) -> Evaluation:
    """Evaluate ``model`` (default: the demo model) on ``suite`` (a name of :data:`SUITES`) with
    DATA ``data``, writing ``out`` (``metrics.csv``, ``summary.json``, ``report.html``, ``images/``).

    ``options``: how the model loads (device, dtype, memory plan, compile; None: the defaults);
    ``quiet``: only errors from leditspp's logger while the run lasts.
    ``settings``: steps, skip, scale, threshold, preserve (None or absent: the model's
    recommended, else the library's); ``sweep``: ``{"scale": [4, 8]}`` or ``["scale=4,8"]``;
    ``resume``: continue the run in ``out``; ``ray``: compute on Ray workers; ``progress(done,
    total)`` and ``stats`` follow the items. Everything is checked before the model loads (a
    :class:`~leditspp.LeditsError`); an item that fails is a row with its error.
    """
    options = {k: v for k, v in locals().items() if k not in ("suite", "data", "out")}
    return _prepare(suite, data, out, **options).run()


@dataclass(frozen=True)
class _Prepared:
    """One evaluation checked and planned, not yet run: what :func:`evaluate` does in two halves,
    so that :func:`evaluate_models` checks every model before running the first."""

    plan: Plan
    model: str
    options: ModelOptions
    folder: Path
    ray: RayOptions | None
    quiet: bool
    run_options: dict[str, Any]

    def run(self) -> Evaluation:
        load = functools.partial(self.options.load, self.model)
        with quiet_logs(self.quiet):
            summary = _run(self.plan, load, self.folder, self.ray, self.run_options)
        rows = runner.read_rows(self.folder / runner.METRICS_CSV)
        title = f"leditspp eval {self.plan.title} — {self.model}"
        sweep_keys = self.run_options["sweep_keys"]
        path = report.write_report(self.folder, rows, summary, title=title, plot=self.plan.plot, sweep_keys=sweep_keys)
        return Evaluation(self.folder, summary, path, self.run_options["stats"])


def _prepare(suite: str, data: str | None, out: str | Path, **options: Any) -> _Prepared:
    """:func:`evaluate`'s checks and plan (its arguments), before any model loads."""
    check_arguments("evaluate", {"suite": suite, "data": data, "out": out, **options}, EVALUATE_KINDS)
    if isinstance(options["sweep"], str) or not isinstance(options["settings"], (Mapping, type(None))):
        raise LeditsError(
            "evaluate: sweep must be a mapping ({'scale': [4, 8]}) or a list of texts (['scale=4,8']) and settings "
            f"a mapping or None; got sweep={options['sweep']!r}, settings={options['settings']!r}"
        )
    if not isinstance(options["options"], (ModelOptions, type(None))):
        raise LeditsError(f"evaluate: options must be None or a ModelOptions; got {options['options']!r}")
    o = SimpleNamespace(**options)
    model_options = o.options or ModelOptions()
    chosen = _suite(suite)
    chosen.check_data(data)
    if o.ray is not None:
        o.ray.check(model_options.device)
    sweep = {k: list(v) for k, v in o.sweep.items()} if isinstance(o.sweep, Mapping) else runner.parse_sweep(o.sweep)
    runner.check_sweep(sweep)
    model = _model(o.model)
    recommended = {**RECOMMENDABLE, **model_settings(model).get("recommended", {})}
    given = _given(o.settings)
    request = Request(
        data, given, sweep, o.metrics, o.limit, o.scenes, o.clip_model, o.dino_model, model_options.device
    )
    plan = chosen.plan(request, recommended)
    folder = _output(str(out), o.resume)
    stats = o.stats if o.stats is not None else RunStats()
    run_options = {"resume": o.resume, "progress": o.progress, "sweep_keys": list(sweep), "stats": stats}
    tags = {"model": model}
    return _Prepared(plan, model, model_options, folder, o.ray, o.quiet, {**run_options, "tags": tags})


def _model(model: str | None) -> str:
    """The model to evaluate (None: the default), its name checked before any model loads."""
    return defaults.MODEL if model is None else check_model_name(model, "--model")


def evaluate_models(
    suite: str, data: str | None, out: str | Path, models: Sequence[str], **options: Any
) -> dict[str, Evaluation]:
    """:func:`evaluate` each of ``models`` into ``out/<model>/`` (``/`` in a hub id becomes
    ``--``), with the same ``options``, then ``out/comparison.md`` and ``out/comparison.html``:
    every edit type's means, a column per model (:mod:`.compare`). Returns the runs by model."""
    if len(models) < 2 or len(set(models)) != len(models) or not all(m.strip() for m in models):
        raise LeditsError(
            f"give two or more different models to compare, separated by commas, none empty; got {list(models)}"
        )
    folders = {model: model.strip("/").replace("/", "--") for model in models}
    options = {**_EVALUATE_OPTIONS, **options}
    prepared = {m: _prepare(suite, data, Path(out) / folders[m], **{**options, "model": m}) for m in models}
    results = {model: run.run() for model, run in prepared.items()}
    write_comparison(out, {folders[m]: r.summary for m, r in results.items()}, f"leditspp eval {suite}: side by side")
    return results


#: The kind of each :func:`evaluate` argument (:data:`leditspp.errors.KINDS`) but options, sweep,
#: settings, metrics, ray, progress and stats.
EVALUATE_KINDS = {
    "suite": "text",
    "data": "text?",
    "out": "text",
    "model": "text?",
    "quiet": "bool",
    "limit": "int?",
    "scenes": "int?",
    "clip_model": "text?",
    "dino_model": "text?",
    "resume": "bool",
}

#: :func:`evaluate`'s keyword options and their defaults (what :func:`evaluate_models` fills in).
_EVALUATE_OPTIONS = {
    name: p.default for name, p in inspect.signature(evaluate).parameters.items() if p.kind is p.KEYWORD_ONLY
}


def _suite(name: str) -> Suite:
    if name not in SUITES:
        raise LeditsError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


def _given(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings given (None values dropped), in :data:`SETTINGS` order; unknown keys refused."""
    settings = settings or {}
    unknown = [k for k in settings if k not in SETTINGS]
    if unknown:
        raise LeditsError(f"unknown eval setting(s) {', '.join(unknown)}; give any of {', '.join(SETTINGS)}")
    return {k: settings[k] for k in SETTINGS if settings.get(k) is not None}


def _run(plan: Plan, load: Callable[[], Any], out: Path, ray: RayOptions | None, options: dict[str, Any]) -> Any:
    """The runner over the plan's items: nothing loaded for a finished run (the report again), the
    editor loaded here, or each Ray worker loading its own (a scene's items go to one worker)."""
    if not runner.pending(plan.items, out, options["resume"], options["tags"]):
        return runner.run(plan.items, None, out, map_items=lambda items: iter(()), **options)
    if ray is None:
        return runner.run(plan.items, plan.evaluator(load()), out, **options)
    from ..distributed import ray_backend, ray_map

    with ray_backend(ray.address, ray.env()):
        mapper = ray_map(load, plan.evaluator, workers=ray.workers, stats=options["stats"], prepare=plan.prepare)
        return runner.run(plan.items, None, out, map_items=mapper, **options)


def _output(output: str, resume: bool) -> Path:
    """The output folder, created if needed and probed for writing; one holding a finished or
    stopped run is refused without --resume."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise LeditsError(f"-o {output!r} is a file; eval writes a folder (metrics.csv, summary.json, report.html)")
    if (out / runner.METRICS_CSV).exists() and not resume:
        raise LeditsError(f"{output!r} holds an earlier run; pass --resume to continue it, or choose another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeditsError(f"cannot create the output folder {output!r} ({exc.strerror}); choose another place") from exc
    check_writable_folder(out, f"output folder {output!r}")
    return out
