"""Scale-out on Ray: the items of a run computed by a pool of workers, written by the driver.

One :class:`Worker` actor per GPU (``num_gpus=1``; one per CPU where the cluster has no GPU)
loads the editor once and computes items with the same pure ``item → Row`` function the serial
path uses (:func:`leditspp.jobs.compute`), so the numbers and images are the serial
run's for the same seeds. Results travel back to the driver, which does all the writing through
the runner: every output is written once, atomically, in one process.

Why actors fed by ``ray.wait`` over a queue, not ``ray.util.ActorPool`` or Ray Data: the driver
must see each outcome as soon as it is done (to write it and move the progress bar), must know
which item a dead worker was holding (to hand it to another worker and count the retry), and
must give up on an item that kills its worker every time instead of retrying it forever.
``ActorPool`` hides the item behind a dead actor and keeps using the dead actor; Ray Data would
own the writing and the ordering that the runner already does. Keeping one item in flight per
worker also hands the work out as workers finish, so slow items do not hold up a fixed share.

Items that share work (a scene's edit types and sweep values share one inversion: the same
``Item.group``) go to one worker where they can (:class:`GroupQueue`), and each worker keeps its
inversions in a small cache, as the web UI does; a worker that runs out of its own groups takes
items of the group with most left rather than idle.

A worker that dies (out of memory, a crash in native code, a lost node) is replaced by a fresh
actor and its item put back at the front of its group, up to ``retries`` times per item; after
that the item is recorded as failed with the reason, and the run goes on.

Inputs travel with the items (``prepare`` reads an item's file on the driver just before it is
handed out) and outputs come back to the driver, so the workers need the model and this package,
not the data: a cluster without a shared file system works.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import LeditsError
from .jobs import ComputeItem, Item, MapItems, Outcome, RunStats, compute
from .logs import LoggingState

logger = logging.getLogger(__name__)

INSTALL = "pip install 'leditspp[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`LeditsError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise LeditsError(f"--ray needs Ray, which is not installed; install it with: {INSTALL}") from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a run scales out, as plain values (``--ray``, ``--ray-workers``,
    ``--ray-env``): ``address`` as :func:`ray_backend` takes it; ``workers`` (None: one per GPU,
    else per CPU); ``runtime_env``: Ray's runtime_env for the workers, a mapping or a JSON/YAML
    file holding one."""

    address: str = "local"
    workers: int | None = None
    runtime_env: dict[str, Any] | str | Path | None = None

    def check(self, device: str | None) -> None:
        """Ray installed, a device workers can each take, a worker count and a runtime_env that make
        sense — refused before any work."""
        import_ray()
        if device and device.startswith("cuda:"):
            raise LeditsError(f"with --ray each worker gets a GPU of its own; give --device cuda, not {device!r}")
        if self.workers is not None and self.workers < 1:
            raise LeditsError(f"--ray-workers must be ≥ 1; got {self.workers}")
        self.env()

    def env(self) -> dict[str, Any] | None:
        """The runtime_env mapping (a file read as YAML: JSON is YAML)."""
        env = self.runtime_env
        if not env:
            return None
        if isinstance(env, (str, Path)):
            import yaml

            try:
                env = yaml.safe_load(Path(env).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise LeditsError(
                    f"cannot read --ray-env {str(self.runtime_env)!r} ({exc}); give a JSON or YAML file"
                ) from exc
        if not isinstance(env, dict):
            raise LeditsError(
                f'--ray-env {str(self.runtime_env)!r} must hold a mapping such as {{"pip": ["leditspp[ray]"]}}; '
                f"got {type(env).__name__}"
            )
        return env or None


@contextmanager
def ray_backend(address: str = "local", runtime_env: dict[str, Any] | None = None) -> Iterator[Any]:
    """Ray, started for the duration: ``"local"`` starts a runtime on this machine (one CPU slot
    per core, its GPUs, no dashboard); ``"auto"`` or ``"ray://HOST:PORT"`` joins an existing
    cluster. ``runtime_env``: Ray's runtime environment for the workers (``pip``, ``py_modules``,
    ``env_vars``, …: what nodes without leditspp or the model need). A runtime already started in
    this process is used as it is. Shut down on exit if started here."""
    ray = import_ray()
    check_address(address)
    if ray.is_initialized():
        yield ray
        return
    options = init_options(address, runtime_env)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError, TypeError) as exc:
        auth = ""
        if address.startswith("ray://") and os.environ.get("RAY_AUTH_MODE") != "token":
            auth = (
                "; a cluster with token authentication (Ray's default for clusters from 2.59) also needs "
                "RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        raise LeditsError(
            f"cannot start or join Ray at --ray {address!r} ({exc}); "
            f"give 'local', 'auto' (a cluster started with `ray start`) or ray://HOST:PORT{auth}"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


_ADDRESS = re.compile(r"(local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)")


def check_address(address: str) -> None:
    """Refuse an address of none of the forms Ray accepts, whether or not a runtime is running."""
    if not _ADDRESS.fullmatch(address):
        raise LeditsError(
            f"cannot start or join Ray at --ray {address!r} (not an address); give 'local', 'auto' "
            "(a cluster started with `ray start`), HOST:PORT or ray://HOST:PORT"
        )


def init_options(address: str, runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """``ray.init``'s arguments for ``--ray ADDRESS`` (and ``--ray-env``)."""
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "address": address}
    if address == "local":  # said so: without it, Ray joins the cluster RAY_ADDRESS names
        options["num_cpus"] = os.cpu_count() or 1
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options


class Worker:
    """One editor, loaded once in its own process; computes items one at a time.

    ``load_editor()`` builds the editor (it runs in the worker, so the model is read there, on the
    worker's device); ``make_evaluate(editor)`` gives the ``item → row`` function (a suite's, a batch edit's). Both
    travel pickled (cloudpickle: closures are fine). ``threads``: torch's CPU threads in this
    worker (Ray sets one per CPU slot); the driver passes its own count, because a float sum split
    over another number of threads rounds differently and the outputs would no longer be the serial
    run's bit for bit. ``logs``: the driver's logging (:class:`~leditspp.logs.LoggingState`), made
    this worker process's, so that what Ray forwards is what the driver would show.
    """

    def __init__(
        self,
        load_editor: Callable[[], Any],
        make_evaluate: Callable[[Any], ComputeItem],
        threads: int | None = None,
        logs: LoggingState | None = None,
    ) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        if logs is not None:  # Ray forwards a worker's output: it logs as the driver does
            logs.apply()
        self.evaluate = make_evaluate(load_editor())

    def ready(self) -> dict[str, Any]:
        """Who this worker is: its process, host and leditspp version (checked against the driver's)."""
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "version": __version__}

    def compute(self, item: Item) -> Outcome:
        return compute(item, self.evaluate)


class GroupQueue:
    """The items waiting to be handed out, each group's to one worker where it can.

    ``take(worker)`` gives a worker the next item of the group it took its last one from; when that
    group has none left, the first group no worker has started; when every group is started, an
    item of the group with the most left (the worker helps rather than idles, at the price of
    computing that group's shared work again). ``put_back(item)`` queues an item again at the
    front of its group (its worker died). Pure bookkeeping: no Ray here.
    """

    def __init__(self, items: Sequence[Item]) -> None:
        self._groups: dict[str, deque[Item]] = {}
        for item in items:
            self._groups.setdefault(item.group_key, deque()).append(item)
        self._size = len(items)
        self._started: set[str] = set()
        self._current: dict[Hashable, str] = {}

    def __len__(self) -> int:
        return self._size

    def take(self, worker: Hashable) -> Item | None:
        """The next item for ``worker`` (None when the queue is empty)."""
        key = self._current.get(worker)
        if key not in self._groups:
            key = next((k for k in self._groups if k not in self._started), None)
            if key is None:
                key = max(self._groups, key=lambda k: len(self._groups[k]), default=None)
            if key is None:
                return None
        self._started.add(key)
        self._current[worker] = key
        group = self._groups[key]
        item = group.popleft()
        if not group:
            del self._groups[key]
        self._size -= 1
        return item

    def put_back(self, item: Item) -> None:
        self._groups.setdefault(item.group_key, deque()).appendleft(item)
        self._size += 1


def ray_map(
    load_editor: Callable[[], Any],
    make_evaluate: Callable[[Any], ComputeItem],
    *,
    workers: int | None = None,
    retries: int = 1,
    threads: int | None = None,
    stats: RunStats | None = None,
    prepare: Callable[[Item], Item] | None = None,
) -> MapItems:
    """A ``map_items`` (:mod:`leditspp.jobs`: for :func:`leditspp.evaluation.runner.run` or a batch edit)
    that computes on Ray (which must be started, see :func:`ray_backend`): outcomes are yielded as
    workers finish them.

    ``workers``: how many actors (default: one per GPU of the cluster, else one per CPU, never
    more than the items); ``retries``: how often an item whose worker died is handed out again;
    ``threads``: torch CPU threads per worker (default: this process's count, so CPU outputs equal
    the serial run's bit for bit — at the price of more threads than cores on one machine);
    ``stats``: its ``workers`` and ``retried`` are set here (the caller counts done and failed);
    ``prepare``: applied to an item on the driver just before it is handed out (read its file);
    an error there is the item's error.
    """
    stats = stats if stats is not None else RunStats()
    if threads is None:
        import torch

        threads = torch.get_num_threads()

    def map_items(items: Sequence[Item]) -> Iterator[Outcome]:
        if not items:
            return
        ray = import_ray()
        actor_class, count = _actor_class(ray, workers, len(items))
        logs = LoggingState.now()  # the driver's, as the run starts (the command line's: hushed)
        spawn = lambda: actor_class.remote(load_editor, make_evaluate, threads, logs)  # noqa: E731
        pool = [spawn() for _ in range(count)]
        stats.workers = count
        try:
            _check_ready(ray, pool)
            yield from _drive(ray, pool, spawn, GroupQueue(items), retries, stats, prepare or (lambda item: item))
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
    if workers is not None and workers > slots:  # the extra actors would wait for a slot forever
        kind = f"{gpus} GPU(s)" if gpus else f"{slots} CPU slot(s) and no GPU"
        raise LeditsError(f"--ray-workers {workers} is more than this Ray cluster has ({kind}); give at most {slots}")
    count = min(workers or slots, n_items)
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    # no Ray-side restarts or task retries: the driver replaces a dead worker and resubmits its item
    # itself, so it knows what was retried and can stop retrying an item that always kills its worker
    env = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}  # threads that wait yield their core
    return ray.remote(max_restarts=0, max_task_retries=0, runtime_env=env, **options)(Worker), count


def _check_ready(ray: Any, pool: list[Any]) -> None:
    """Wait until every worker has its editor; a model that cannot load, or a node running another
    version of leditspp (whose outputs could differ), is one clear error."""
    try:
        answers = ray.get([actor.ready.remote() for actor in pool])
    except ray.exceptions.RayError as exc:
        raise LeditsError(f"the Ray workers could not load the model: {_reason(exc)}") from exc
    for answer in answers:
        if answer["version"] != __version__:
            raise LeditsError(
                f"the Ray worker on {answer['host']} runs leditspp {answer['version']}, this process "
                f"{__version__}; install the same version on every node, or ship this one with "
                "--ray-env (a runtime_env with py_modules or pip)"
            )


def _drive(
    ray: Any,
    pool: list[Any],
    spawn: Callable[[], Any],
    queue: GroupQueue,
    retries: int,
    stats: RunStats,
    prepare: Callable[[Item], Item],
) -> Iterator[Outcome]:
    """One item in flight per worker slot; each finished outcome yielded; a dead worker replaced
    (the new one keeps its slot and group) and its item queued again (at most ``retries`` times,
    then recorded as failed)."""
    tries: dict[str, int] = {}
    idle = list(range(len(pool)))
    in_flight: dict[Any, tuple[int, Item]] = {}
    while queue or in_flight:
        while idle and queue:
            slot, item = idle[0], queue.take(idle[0])
            try:
                in_flight[pool[slot].compute.remote(prepare(item))] = (slot, item)
                idle.pop(0)
            except Exception as exc:  # the item's input cannot be read: its error, the worker stays idle
                yield Outcome(item, None, f"{type(exc).__name__}: {exc}", 0.0)
        if not in_flight:
            continue
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        slot, item = in_flight.pop(ref)
        idle.append(slot)
        try:
            yield ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            pool[slot] = spawn()  # Ray keeps the dead one's resources until it is gone
            tries[item.id] = tries.get(item.id, 0) + 1
            if tries[item.id] <= retries:
                logger.warning("a Ray worker died on item %s; handing it out again", item.id)
                stats.retried += 1
                queue.put_back(item)
                continue
            yield Outcome(item, None, f"WorkerDied: its worker died {tries[item.id]} times ({_reason(exc)})", 0.0)
        except ray.exceptions.RayError as exc:
            yield Outcome(item, None, f"RayError: {_reason(exc)}", 0.0)


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error, which is long and mostly a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
