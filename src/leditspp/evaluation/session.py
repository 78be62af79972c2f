"""One evaluation from Python: a suite planned and checked, the editor loaded (here or on Ray
workers), every item run through :mod:`.runner`, and the report written.

    from leditspp.evaluation import evaluate
    result = evaluate("shapes", None, "out/", model="demo", scenes=2)
    result.summary["per_edit_type"]["remove"]["success"]

``leditspp eval`` is this function behind flags; :func:`evaluate_models` runs several models on
one suite and writes them side by side (``leditspp eval shapes --model demo,demo-flow``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..distributed import RayOptions
from ..errors import LeditsError
from ..files import check_writable_folder
from ..jobs import EditorSpec, RunStats
from ..models import RECOMMENDABLE, model_settings
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
    device: str | None = None,
    dtype: str | None = None,
    compile: bool = False,
    quiet: bool = False,
    offload: str = "auto",
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

    ``settings``: steps, skip, scale, threshold, preserve (None or absent: the model's
    recommended, else the library's); ``sweep``: ``{"scale": [4, 8]}`` or ``["scale=4,8"]``;
    ``resume``: continue the run in ``out``; ``ray``: compute on Ray workers; ``progress(done,
    total)`` and ``stats`` follow the items. Everything is checked before the model loads (a
    :class:`~leditspp.LeditsError`); an item that fails is a row with its error.
    """
    chosen = _suite(suite)
    chosen.check_data(data)
    if ray is not None:
        ray.check(device)
    sweep = {k: list(v) for k, v in sweep.items()} if isinstance(sweep, Mapping) else runner.parse_sweep(sweep)
    model = model or defaults.MODEL
    recommended = {**RECOMMENDABLE, **model_settings(model).get("recommended", {})}
    request = Request(data, _given(settings), sweep, metrics, limit, scenes, clip_model, dino_model, device)
    plan = chosen.plan(request, recommended)
    folder = _output(str(out), resume)
    stats = stats if stats is not None else RunStats()
    options = {"resume": resume, "progress": progress, "sweep_keys": list(sweep), "stats": stats}
    summary = _run(plan, EditorSpec(model, device, dtype, compile, quiet, offload), folder, ray, options)
    rows = runner.read_rows(folder / runner.METRICS_CSV)
    title = f"leditspp eval {plan.title} — {model}"
    path = report.write_report(folder, rows, summary, title=title, plot=plan.plot, sweep_keys=list(sweep))
    return Evaluation(folder, summary, path, stats)


def evaluate_models(
    suite: str, data: str | None, out: str | Path, models: Sequence[str], **options: Any
) -> dict[str, Evaluation]:
    """:func:`evaluate` each of ``models`` into ``out/<model>/`` (``/`` in a hub id becomes
    ``--``), with the same ``options``, then ``out/comparison.md`` and ``out/comparison.html``:
    every edit type's means, a column per model (:mod:`.compare`). Returns the runs by model."""
    if len(models) < 2 or len(set(models)) != len(models):
        raise LeditsError(f"give two or more different models to compare, separated by commas; got {list(models)}")
    folders = {model: model.strip("/").replace("/", "--") for model in models}
    results = {model: evaluate(suite, data, Path(out) / folders[model], model=model, **options) for model in models}
    write_comparison(out, {folders[m]: r.summary for m, r in results.items()}, f"leditspp eval {suite}: side by side")
    return results


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


def _run(plan: Plan, editor: EditorSpec, out: Path, ray: RayOptions | None, options: dict[str, Any]) -> Any:
    """The runner over the plan's items: nothing loaded for a finished run (the report again), the
    editor loaded here, or each Ray worker loading its own (a scene's items go to one worker)."""
    if not runner.pending(plan.items, out, options["resume"]):
        return runner.run(plan.items, None, out, map_items=lambda items: iter(()), **options)
    if ray is None:
        return runner.run(plan.items, plan.evaluator(editor.load()), out, **options)
    from ..distributed import ray_backend, ray_map

    with ray_backend(ray.address, ray.env()):
        mapper = ray_map(editor.load, plan.evaluator, workers=ray.workers, stats=options["stats"], prepare=plan.prepare)
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
