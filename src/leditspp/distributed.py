"""Scale-out on Ray: the items of a run computed by a pool of workers, written by the driver.

One :class:`Worker` actor per GPU (``num_gpus=1``; one per CPU where the cluster has no GPU)
loads the editor once and computes items with the same pure ``item → Row`` function the serial
path uses (:func:`leditspp.evaluation.runner.compute`), so the numbers and images are the serial
run's for the same seeds. Results travel back to the driver, which does all the writing through
the runner: every output is written once, atomically, in one process.

Why actors fed by ``ray.wait`` over a queue, not ``ray.util.ActorPool`` or Ray Data: the driver
must see each outcome as soon as it is done (to write it and move the progress bar), must know
which item a dead worker was holding (to hand it to another worker and count the retry), and
must give up on an item that kills its worker every time instead of retrying it forever.
``ActorPool`` hides the item behind a dead actor and keeps using the dead actor; Ray Data would
own the writing and the ordering that the runner already does. Keeping one item in flight per
worker also hands the work out as workers finish, so slow items do not hold up a fixed share.

A worker that dies (out of memory, a crash in native code, a lost node) is replaced by a fresh
actor and its item put back at the end of the queue, up to ``retries`` times per item; after that
the item is recorded as failed with the reason, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import LeditsError
from .evaluation.runner import EvaluateItem, Item, MapItems, Outcome, compute

logger = logging.getLogger(__name__)

INSTALL = "pip install 'leditspp[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`LeditsError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise LeditsError(f"--ray needs Ray, which is not installed; install it with: {INSTALL}") from exc
    return ray


@contextmanager
def ray_backend(address: str = "local") -> Iterator[Any]:
    """Ray, started for the duration: ``"local"`` starts a runtime on this machine (one CPU slot
    per core, no dashboard); ``"auto"`` or ``"ray://HOST:PORT"`` joins an existing cluster. A
    runtime already started in this process is used as it is. Shut down on exit if started here."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address == "local":
        options["num_cpus"] = os.cpu_count() or 1
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LeditsError(
            f"cannot start or join Ray at --ray {address!r} ({exc}); "
            "give 'local', 'auto' (a cluster started with `ray start`) or ray://HOST:PORT"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


class Worker:
    """One editor, loaded once in its own process; computes items one at a time.

    ``load_editor()`` builds the editor (it runs in the worker, so the model is read there, on the
    worker's device); ``make_evaluate(editor)`` gives the suite's ``item → Row`` function. Both
    travel pickled (cloudpickle: closures are fine). ``threads``: torch's CPU threads in this
    worker (Ray sets one per CPU slot); the driver passes its own count, because a float sum split
    over another number of threads rounds differently and the outputs would no longer be the serial
    run's bit for bit.
    """

    def __init__(
        self, load_editor: Callable[[], Any], make_evaluate: Callable[[Any], EvaluateItem], threads: int | None = None
    ) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.evaluate = make_evaluate(load_editor())

    def ready(self) -> int:
        return os.getpid()

    def compute(self, item: Item) -> Outcome:
        return compute(item, self.evaluate)


@dataclass
class RayStats:
    """What a Ray run did, for the progress bar and the closing line."""

    workers: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = 60 * (self.done + self.failed) / self.seconds if self.seconds else 0.0
        return (
            f"ray: {self.workers} workers, {self.done} done, {self.failed} failed, "
            f"{self.retried} retried, {rate:.1f} items/min"
        )


def ray_map(
    load_editor: Callable[[], Any],
    make_evaluate: Callable[[Any], EvaluateItem],
    *,
    workers: int | None = None,
    retries: int = 1,
    threads: int | None = None,
    stats: RayStats | None = None,
) -> MapItems:
    """A ``map_items`` for :func:`leditspp.evaluation.runner.run` that computes on Ray (which must
    be started, see :func:`ray_backend`): outcomes are yielded as workers finish them.

    ``workers``: how many actors (default: one per GPU of the cluster, else one per CPU, never
    more than the items); ``retries``: how often an item whose worker died is handed out again;
    ``threads``: torch CPU threads per worker (default: this process's count, so CPU outputs equal
    the serial run's bit for bit — at the price of more threads than cores on one machine).
    """
    stats = stats if stats is not None else RayStats()
    if threads is None:
        import torch

        threads = torch.get_num_threads()

    def map_items(items: Sequence[Item]) -> Iterator[Outcome]:
        if not items:
            return
        ray = import_ray()
        actor_class, count = _actor_class(ray, workers, len(items))
        start = time.perf_counter()
        spawn = lambda: actor_class.remote(load_editor, make_evaluate, threads)  # noqa: E731
        pool = [spawn() for _ in range(count)]
        stats.workers = count
        try:
            _check_ready(ray, pool)
            for outcome in _drive(ray, pool, spawn, items, retries, stats):
                stats.done += not outcome.error
                stats.failed += bool(outcome.error)
                stats.seconds = time.perf_counter() - start
                yield outcome
        finally:
            for actor in pool:
                ray.kill(actor)

    return map_items


def _actor_class(ray: Any, workers: int | None, n_items: int) -> tuple[Any, int]:
    """The remote Worker class (a GPU each where the cluster has GPUs, else a CPU) and how many."""
    if workers is not None and workers < 1:
        raise LeditsError(f"Ray workers must be ≥ 1; got {workers}")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    slots = gpus or max(1, int(resources.get("CPU", 1)))
    count = min(workers or slots, n_items)
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    # no Ray-side restarts or task retries: the driver replaces a dead worker and resubmits its item
    # itself, so it knows what was retried and can stop retrying an item that always kills its worker
    env = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}  # threads that wait yield their core
    return ray.remote(max_restarts=0, max_task_retries=0, runtime_env=env, **options)(Worker), count


def _check_ready(ray: Any, pool: list[Any]) -> None:
    """Wait until every worker has its editor; a model that cannot load is one clear error."""
    try:
        ray.get([actor.ready.remote() for actor in pool])
    except ray.exceptions.RayError as exc:
        raise LeditsError(f"the Ray workers could not load the model: {_reason(exc)}") from exc


def _drive(
    ray: Any, pool: list[Any], spawn: Callable[[], Any], items: Sequence[Item], retries: int, stats: RayStats
) -> Iterator[Outcome]:
    """One item in flight per worker; each finished outcome yielded; a dead worker replaced and
    its item queued again (at most ``retries`` times, then recorded as failed)."""
    queue = deque(items)
    tries: dict[str, int] = {}
    idle = list(pool)
    in_flight: dict[Any, tuple[Any, Item]] = {}
    while queue or in_flight:
        while idle and queue:
            actor, item = idle.pop(), queue.popleft()
            in_flight[actor.compute.remote(item)] = (actor, item)
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        actor, item = in_flight.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            pool[pool.index(actor)] = actor = spawn()  # Ray keeps its resources until it is gone
            tries[item.id] = tries.get(item.id, 0) + 1
            if tries[item.id] <= retries:
                logger.warning("a Ray worker died on item %s; handing it out again", item.id)
                stats.retried += 1
                queue.append(item)
                idle.append(actor)
                continue
            outcome = Outcome(item, None, f"WorkerDied: its worker died {tries[item.id]} times ({_reason(exc)})", 0.0)
        except ray.exceptions.RayError as exc:
            outcome = Outcome(item, None, f"RayError: {_reason(exc)}", 0.0)
        idle.append(actor)
        yield outcome


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error, which is long and mostly a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
