"""The fault catalogue: bad inputs and faults tried on every surface a user reaches — command-line
values, image and output files, recipes, model folders and their ``leditspp.json``, saved
inversions, evaluation runs and their resume, the Python entry points and the web UI — each
judged by what the user would see.

Verdicts (good: ``refused``, ``worked``; the rest are defects):
- ``refused``: exit 2 (a Python call: ``LeditsError``/``TypeError``/``ValueError``) with a one-line
  message, before any model loads where the value needs no model;
- ``worked``: exit 0 and the result checked (the image written, not black);
- ``late``: refused, but only after a model was loaded for a value that needs none;
- ``crash``: an internal error or a raw exception;
- ``data lost``: a file the run reads (input, recipe, finished result) changed or disappeared;
- ``silent``: exit 0 where the input is bad, or a result whose check fails;
- ``wrong refusal``: a good input refused.

Run in-process (the built-in demo models, so offline, ≈ 10 min on 2 cores):
``python benchmarks/fault_catalogue.py --out catalogue/`` writes ``catalogue.md`` and ``catalogue.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GOOD = ("refused", "worked")
VERDICTS = ("refused", "worked", "late", "crash", "data lost", "silent", "wrong refusal")


@dataclass
class Outcome:
    """What a probe saw: exit code (0 ok, 1 crash or failed input, 2 refused), the message, model loads."""

    code: int
    message: str = ""
    loads: int = 0
    crashed: bool = False


@dataclass(frozen=True)
class Probe:
    """One bad input or fault: ``act(env)`` runs it; ``expect`` is "refuse" or "work";
    ``early``: a refusal must come before any model loads; ``check(env)`` judges a worked result
    (None: right, else what is wrong); ``keep``: files (under the probe's folder) that must not change."""

    area: str
    name: str
    act: Callable[[Env], Outcome]
    expect: str = "refuse"
    early: bool = True
    check: Callable[[Env], str | None] | None = None
    keep: tuple[str, ...] = ()


@dataclass
class Env:
    """The probe's own folder (``root``), filled with fresh fixtures, and the shared ones (``shared``)."""

    root: Path
    shared: Path
    loads: list[int] = field(default_factory=lambda: [0])
    started: float = 0.0  # when the probe began (time.time())
    first_rows: list[dict] = field(default_factory=list)  # an evaluation's rows before the probe's run
    folders: set[Path] = field(default_factory=set)  # where a web server's requests wrote their files

    def p(self, name: str) -> str:
        return str(self.root / name)


# --- running things -------------------------------------------------------------------------


def cli(*argv: str) -> Callable[[Env], Outcome]:
    """A probe action: ``leditspp ARGV`` in this process ({root} and {shared} filled in)."""

    def act(env: Env) -> Outcome:
        from leditspp.cli import main

        args = [a.format(root=env.root, shared=env.shared) for a in argv]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:
                return Outcome(1, traceback.format_exc(limit=1), crashed=True)
        text = err.getvalue()
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
        crashed = "internal error" in text or "Traceback" in text
        return Outcome(code, lines[-1] if lines else "", crashed=crashed)

    return act


def call(fn: Callable[[Env], object]) -> Callable[[Env], Outcome]:
    """A probe action: a Python call; a LeditsError/TypeError/ValueError is a refusal."""

    def act(env: Env) -> Outcome:
        from leditspp import LeditsError

        try:
            fn(env)
        except (LeditsError, TypeError, ValueError) as exc:
            return Outcome(2, f"{type(exc).__name__}: {exc}".splitlines()[0])
        except Exception as exc:
            return Outcome(1, f"{type(exc).__name__}: {exc}".splitlines()[0], crashed=True)
        return Outcome(0)

    return act


def verdict(probe: Probe, outcome: Outcome, changed: list[str]) -> str:
    if changed:
        return "data lost"
    if outcome.crashed:
        return "crash"
    if probe.expect == "refuse":
        if outcome.code == 0:
            return "silent"
        return "late" if probe.early and outcome.loads else "refused"
    if outcome.code not in (0, 1) or (outcome.code == 1 and not probe.check):
        return "wrong refusal"
    problem = probe.check(probe_env[0]) if probe.check else None
    if problem:
        outcome.message = f"{outcome.message} | {problem}".strip(" |")
        return "silent"
    return "worked"


probe_env: list[Env] = []


@contextlib.contextmanager
def counted_loads(env: Env) -> Iterator[None]:
    """Count ``Editor.from_pretrained`` calls; the built-in models are loaded once and shared."""
    from leditspp.editor import Editor

    original = Editor.__dict__["from_pretrained"]

    def from_pretrained(cls, model="demo", **kwargs):  # type: ignore[no-untyped-def]
        env.loads[0] += 1
        if model in ("demo", "demo-flow") and not kwargs.get("torch_dtype"):
            key = (model, kwargs.get("offload", "auto"), str(kwargs.get("device")))
            if key not in _editors:
                _editors[key] = original.__func__(cls, model, **kwargs)
            return _editors[key]
        return original.__func__(cls, model, **kwargs)

    Editor.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        Editor.from_pretrained = original


_editors: dict[tuple, object] = {}


@contextlib.contextmanager
def patched(target: str, value: object) -> Iterator[None]:
    """``module.attr`` replaced for the block."""
    import importlib

    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    old = getattr(module, attr)
    setattr(module, attr, value)
    try:
        yield
    finally:
        setattr(module, attr, old)


def disk_full(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def with_patch(target: str, value: object, act: Callable[[Env], Outcome]) -> Callable[[Env], Outcome]:
    def run(env: Env) -> Outcome:
        with patched(target, value):
            return act(env)

    return run


def with_env(name: str, value: str, act: Callable[[Env], Outcome]) -> Callable[[Env], Outcome]:
    def run(env: Env) -> Outcome:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return act(env)
        finally:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

    return run


# --- fixtures -------------------------------------------------------------------------------


def make_shared(folder: Path) -> None:
    """What every probe may read (never written by a probe): the image, an inversion of it with
    the demo model, model folders derived from the demo models."""
    from leditspp.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "shapes.png", folder / "img.png")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert (
            main(["invert", str(folder / "img.png"), "--steps", "4", "--quiet", "-o", str(folder / "inv.safetensors")])
            == 0
        )
    import leditspp.demo

    demo = Path(leditspp.demo.__file__).parent
    for name, source in (("demo", "demo_model"), ("flow", "demo_flow_model")):
        link_model(demo / source, folder / name)


def link_model(source: Path, target: Path) -> None:
    """A copy of a model folder whose weights are links: its small files can be changed."""
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".safetensors":
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(path)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)


def fresh(env: Env) -> None:
    """The probe's own inputs: img.png, imgs/ (three images), out/ (empty)."""
    shutil.copy(env.shared / "img.png", env.root / "img.png")
    (env.root / "imgs").mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(env.shared / "img.png", env.root / "imgs" / f"{name}.png")
    (env.root / "out").mkdir()


def model_variant(base: str, path: str, change: Callable[[dict], None] | None = None, remove: bool = False):
    """A probe preparation: model folder ``m`` from shared ``base`` with JSON file ``path`` changed."""

    def prepare(env: Env) -> None:
        link_model(env.shared / base, env.root / "m")
        target = env.root / "m" / path
        if remove:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            return
        data = json.loads(target.read_text()) if target.exists() else {}
        change(data)
        target.write_text(json.dumps(data))

    return prepare


def image_ok(name: str) -> Callable[[Env], str | None]:
    """A worked check: the output exists and is not black (the example is a light scene)."""

    def check(env: Env) -> str | None:
        path = env.root / name
        if not path.exists():
            return f"{name} not written"
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        black = np.mean(pixels.max(axis=-1) <= 2)  # what a non-finite result decodes to
        return f"{name} is {black:.0%} black" if black > 0.5 else None

    return check


# --- the probes -----------------------------------------------------------------------------

EDIT = ("edit", "{root}/img.png", "-e", "+red circle", "--steps", "2", "--quiet", "-o", "{root}/out/x.png")
RUN = ("edit", "{root}/img.png", "--steps", "2", "--quiet", "-o", "{root}/out/x.png")


def edit(*extra: str) -> Callable[[Env], Outcome]:
    return cli(*EDIT, *extra)


def flag_probes() -> list[Probe]:
    bad = {
        "--steps": ["0", "-3", "abc"],
        "--skip": ["-0.1", "1", "1.5", "nan", "inf"],
        "--seed": ["-1", str(2**64)],
        "--source-guidance": ["-1", "nan", "inf", "1e30"],
        "--height": ["0", "-64", "7", "100000"],
        "--width": ["0", "7", "100000"],
        "--max-pixels": ["0", "-1"],
        "--scale": ["nan", "inf", "-1", "1e308"],
        "--threshold": ["-0.1", "1", "90", "nan"],
        "--warmup": ["-1", "1000"],
        "--cooldown": ["-1"],
        "--guidance-rescale": ["-1", "2", "nan"],
        "--preserve": ["-1", "1000", "x"],
        "--mask-mode": ["foo"],
        "--solver": ["euler"],
        "--dtype": ["float8"],
        "--device": ["gpu", "cuda:99"],
        "--offload": ["cloud"],
    }
    probes = [Probe("flags", f"{flag} {value}", edit(flag, value)) for flag, values in bad.items() for value in values]
    probes += [
        Probe("flags", "--preserve 1 --mask-mode none", edit("--preserve", "1", "--mask-mode", "none")),
        Probe("flags", "--solver lcm on the flow demo", edit("--solver", "lcm", "--model", "demo-flow")),
        Probe("flags", "--ray --ray-workers 0", edit("--ray", "--ray-workers", "0")),
        Probe("flags", "no -o", cli("edit", "{root}/img.png", "-e", "+x")),
        Probe("flags", "no input", cli("edit", "-e", "+x", "-o", "{root}/out/x.png")),
    ]
    concepts = ["", "+", "-", "+:5", "+x:abc", "+x@2", "+x:1e400", "+x:5@0.5@0.3", "+x:-4"]
    probes += [Probe("flags", f"-e {c!r}", cli(*RUN, "-e", c)) for c in concepts]
    probes += [
        Probe(
            "flags",
            "the README's -e '+sunglasses' -e '-beard:7'",
            cli(*RUN, "-e", "+sunglasses", "-e", "-beard:7"),
            "work",
            check=image_ok("out/x.png"),
        ),
        Probe(
            "flags",
            "an edit with every setting given",
            edit("--seed", "3", "--skip", "0.2", "--preserve", "1", "--masks"),
            "work",
            check=image_ok("out/x.png"),
        ),
    ]
    return probes


def write(name: str, data: bytes | str) -> Callable[[Env], None]:
    def prepare(env: Env) -> None:
        path = env.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return prepare


class prepared:  # used like a function: prepared(prepare, act)
    """A probe action with a preparation that runs first (before the files to keep are read)."""

    def __init__(self, prepare: Callable[[Env], None], act: Callable[[Env], Outcome]) -> None:
        self.prepare, self.act = prepare, act

    def __call__(self, env: Env) -> Outcome:
        return self.act(env)


def truncated_png(env: Env) -> None:
    (env.root / "t.png").write_bytes((env.shared / "img.png").read_bytes()[:300])


def bomb(env: Env) -> None:
    Image.new("1", (12000, 12000)).save(env.root / "big.png")


def animated(env: Env) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    frames[0].save(env.root / "anim.gif", save_all=True, append_images=frames[1:])


def non_utf8(env: Env) -> None:
    folder = os.fsencode(env.root / "imgs")
    shutil.copy(env.shared / "img.png", os.path.join(folder, b"\xff\xfe.png"))


def outputs_of_others(env: Env) -> str | None:
    missing = [n for n in ("a.png", "b.png", "c.png") if not (env.root / "out" / n).exists()]
    return f"not written: {missing}" if missing else None


def file_probes() -> list[Probe]:
    def edit_of(image: str) -> Callable[[Env], Outcome]:
        return cli("edit", image, "-e", "+x", "--steps", "2", "--quiet", "-o", "{root}/out/x.png")

    keep_imgs = ("imgs/a.png", "imgs/b.png", "imgs/c.png", "img.png")
    return [
        Probe("files", "image missing", edit_of("{root}/none.png")),
        Probe("files", "a text file as image", prepared(write("t.png", "hello"), edit_of("{root}/t.png"))),
        Probe("files", "an empty file", prepared(write("e.png", b""), edit_of("{root}/e.png"))),
        Probe("files", "a truncated PNG", prepared(truncated_png, edit_of("{root}/t.png"))),
        Probe("files", "a 12000² image (pixel bomb)", prepared(bomb, edit_of("{root}/big.png"))),
        Probe("files", "an animated GIF", prepared(animated, edit_of("{root}/anim.gif"))),
        Probe(
            "files",
            "a folder without images",
            prepared(write("none/readme.txt", "x"), cli("edit", "{root}/none", "-e", "+x", "-o", "{root}/out")),
        ),
        Probe("files", "a glob matching nothing", cli("edit", "{root}/*.nothing", "-e", "+x", "-o", "{root}/out")),
        Probe("files", "output suffix .gif", cli(*EDIT[:-1], "{root}/out/x.gif")),
        Probe("files", "output folder missing", cli(*EDIT[:-1], "{root}/nowhere/x.png")),
        Probe("files", "output is a folder", cli(*EDIT[:-1], "{root}/out")),
        Probe("files", "-o the input file", cli(*EDIT[:-1], "{root}/img.png"), keep=keep_imgs),
        Probe("files", "-o the input file by another path", cli(*EDIT[:-1], "{root}/imgs/../img.png"), keep=keep_imgs),
        Probe(
            "files",
            "a folder into itself",
            cli("edit", "{root}/imgs", "-e", "+x", "--steps", "2", "-o", "{root}/imgs"),
            keep=keep_imgs,
        ),
        Probe(
            "files",
            "a folder into itself --resume",
            cli("edit", "{root}/imgs", "-e", "+x", "--resume", "-o", "{root}/imgs"),
            keep=keep_imgs,
        ),
        Probe(
            "files",
            "-o over the recipe",
            prepared(
                copy_shared("img.png", "r.png"), cli(*RUN, "--recipe", "{root}/r.png", "-e", "+x", "-o", "{root}/r.png")
            ),
            keep=("r.png",),
        ),
        Probe(
            "files",
            "two inputs with one stem",
            prepared(copy_shared("img.png", "imgs/a.jpg"), cli("edit", "{root}/imgs", "-e", "+x", "-o", "{root}/out")),
        ),
        Probe(
            "files",
            "a non-UTF-8 file name in a folder",
            prepared(non_utf8, cli("edit", "{root}/imgs", "-e", "+x", "--steps", "2", "--quiet", "-o", "{root}/out")),
            "work",
            check=outputs_of_others,
        ),
        Probe(
            "files",
            "disk full writing an edit",
            with_patch("os.replace", disk_full, edit()),
            early=False,
        ),
        Probe(
            "files",
            "disk full writing an inversion",
            with_patch(
                "os.replace",
                disk_full,
                cli("invert", "{root}/img.png", "--steps", "2", "--quiet", "-o", "{root}/out/i.safetensors"),
            ),
            early=False,
        ),
        Probe(
            "files",
            "disk full with --save-inversion",
            with_patch("os.replace", disk_full, edit("--save-inversion", "{root}/out/i.safetensors")),
            early=False,
        ),
        Probe("files", "invert to a .png", cli("invert", "{root}/img.png", "-o", "{root}/out/i.png")),
        Probe(
            "files",
            "a folder edit",
            cli("edit", "{root}/imgs", "-e", "+x", "--steps", "2", "--quiet", "-o", "{root}/out"),
            "work",
            check=outputs_of_others,
        ),
    ]


def copy_shared(name: str, to: str) -> Callable[[Env], None]:
    def prepare(env: Env) -> None:
        (env.root / to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(env.shared / name, env.root / to)

    return prepare


def recipe_probes() -> list[Probe]:
    def with_recipe(name: str, text: str) -> Callable[[Env], Outcome]:
        return prepared(write(name, text), cli(*RUN, "--recipe", "{root}/" + name, "-o", "{root}/out/x.png"))

    bad = {
        "invalid JSON": ("r.json", "{steps: 3"),
        "an unknown key": ("r.json", '{"stepz": 3}'),
        "edits as a string": ("r.json", '{"edits": "+hat"}'),
        "an edit that is a number": ("r.json", '{"edits": [5]}'),
        "a NaN scale": ("r.json", '{"edits": [{"prompt": "hat", "scale": NaN}]}'),
        "a scale of 1e308": ("r.json", '{"edits": [{"prompt": "hat", "scale": 1e308}]}'),
        "steps 0": ("r.json", '{"steps": 0, "edits": ["+hat"]}'),
        "a seed of 2**64": ("r.json", '{"seed": 18446744073709551616, "edits": ["+hat"]}'),
        "images not a mapping": ("r.json", '{"images": ["a.png"]}'),
        "an image entry giving the model": ("r.json", '{"images": {"img.png": {"model": "demo"}}}'),
        "invalid YAML": ("r.yaml", "edits: [+hat\n"),
        "a list at the top": ("r.json", "[1, 2]"),
        "source_guidance 1e30": ("r.json", '{"source_guidance": 1e30, "edits": ["+hat"]}'),
    }
    probes = [Probe("recipes", name, with_recipe(file, text)) for name, (file, text) in bad.items()]
    probes += [
        Probe("recipes", "a PNG without a recipe", cli(*RUN, "--recipe", "{root}/img.png", "-o", "{root}/out/x.png")),
        Probe("recipes", "a recipe file missing", cli(*RUN, "--recipe", "{root}/none.json", "-o", "{root}/out/x.png")),
        Probe(
            "recipes",
            "a valid YAML recipe",
            with_recipe("r.yaml", "steps: 2\nedits: ['+hat:5']\n"),
            "work",
            check=image_ok("out/x.png"),
        ),
    ]
    return probes


def inversion_edit(path: str, *extra: str) -> Callable[[Env], Outcome]:
    return cli("edit", "--inversion", path, "-e", "+x", "--quiet", "-o", "{root}/out/x.png", *extra)


def tamper(change: Callable[[dict, dict], None]) -> Callable[[Env], None]:
    """Rewrite the shared inversion into ``i.safetensors`` with ``change(tensors, metadata)`` applied."""

    def prepare(env: Env) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(env.shared / "inv.safetensors"), "pt") as f:
            meta = dict(f.metadata())
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        change(tensors, meta)
        save_file(tensors, str(env.root / "i.safetensors"), metadata=meta)

    return prepare


def set_info(key: str, value: object) -> Callable[[dict, dict], None]:
    def change(tensors: dict, meta: dict) -> None:
        info = json.loads(meta["info"])
        info[key] = value
        meta["info"] = json.dumps(info)

    return change


def version_one(then: Callable[[dict, dict], None]) -> Callable[[dict, dict], None]:
    def change(tensors: dict, meta: dict) -> None:
        then(tensors, meta)
        meta["format_version"] = "1"
        meta.pop("sha256", None)

    return change


def scale_noise(tensors: dict, meta: dict) -> None:
    for name in tensors:
        if "noise" in name:
            tensors[name] = tensors[name] * 1e38


def inversion_probes() -> list[Probe]:
    tampered = {
        "the content hash removed": lambda t, m: m.pop("sha256"),
        "a changed solver, hash kept": set_info("solver", "ddpm"),
        "version '1' and a changed solver": version_one(set_info("solver", "ddpm")),
        "version '1' and noise maps ×1e38": version_one(scale_noise),
        "version '1' and a wrong height": version_one(set_info("height", 512)),
        "version '99'": lambda t, m: m.update(format_version="99"),
        "version 'x'": lambda t, m: m.update(format_version="x"),
    }
    probes = [
        Probe("inversions", name, prepared(tamper(change), inversion_edit("{root}/i.safetensors")))
        for name, change in tampered.items()
    ]
    probes += [
        Probe("inversions", "a file missing", inversion_edit("{root}/none.safetensors")),
        Probe(
            "inversions", "a text file", prepared(write("t.safetensors", "hi"), inversion_edit("{root}/t.safetensors"))
        ),
        Probe("inversions", "a truncated file", prepared(truncate_inversion, inversion_edit("{root}/i.safetensors"))),
        Probe(
            "inversions",
            "made with another model",
            inversion_edit("{shared}/inv.safetensors", "--model", "demo-flow"),
            early=False,
        ),
        Probe("inversions", "--steps with --inversion", inversion_edit("{shared}/inv.safetensors", "--steps", "3")),
        Probe("inversions", "a warm-up past its steps", inversion_edit("{shared}/inv.safetensors", "--warmup", "9")),
        Probe(
            "inversions",
            "--inversion and an image",
            cli(
                "edit",
                "{root}/img.png",
                "--inversion",
                "{shared}/inv.safetensors",
                "-e",
                "+x",
                "-o",
                "{root}/out/x.png",
            ),
        ),
        Probe(
            "inversions",
            "an edit of a saved inversion",
            inversion_edit("{shared}/inv.safetensors"),
            "work",
            check=image_ok("out/x.png"),
        ),
        Probe("inversions", "leditspp info of it", cli("info", "{shared}/inv.safetensors"), "work"),
    ]
    return probes


def truncate_inversion(env: Env) -> None:
    data = (env.shared / "inv.safetensors").read_bytes()
    (env.root / "i.safetensors").write_bytes(data[: len(data) // 2])


def model_probes() -> list[Probe]:
    def on(prepare: Callable[[Env], None], early: bool = True, *extra: str) -> Callable[[Env], Outcome]:
        return prepared(prepare, edit("--model", "{root}/m", *extra))

    def rec(key: str, value: object) -> Callable[[dict], None]:
        return lambda data: data.setdefault("recommended", {}).__setitem__(key, value)

    json_cases = {
        "leditspp.json scale 1e308": rec("scale", 1e308),
        "leditspp.json threshold 90": rec("threshold", 90),
        "leditspp.json steps 0": rec("steps", 0),
        "leditspp.json an unknown setting": rec("stepz", 3),
        "leditspp.json mask_level 99": lambda d: d.__setitem__("mask_level", 99),
        "leditspp.json source_guidance 1e30": rec("source_guidance", 1e30),
    }
    probes = [
        Probe("models", name, on(model_variant("demo", "leditspp.json", change))) for name, change in json_cases.items()
    ]
    probes += [
        Probe(
            "models",
            "leditspp.json not JSON",
            prepared(
                lambda env: (
                    link_model(env.shared / "demo", env.root / "m"),
                    (env.root / "m" / "leditspp.json").write_text("{"),
                ),
                edit("--model", "{root}/m"),
            ),
        ),
        Probe("models", "a folder that does not exist", edit("--model", "{root}/nothing")),
        Probe(
            "models",
            "a folder without model_index.json",
            on(model_variant("demo", "model_index.json", remove=True)),
            early=False,
        ),
        Probe("models", "a hub id not in the cache", edit("--model", "nobody/no-such-model"), early=False),
        Probe(
            "models",
            "scheduler num_train_timesteps 0",
            on(
                model_variant(
                    "demo", "scheduler/scheduler_config.json", lambda d: d.__setitem__("num_train_timesteps", 0)
                )
            ),
            early=False,
        ),
        Probe(
            "models",
            "flow scheduler shift 'abc'",
            on(model_variant("flow", "scheduler/scheduler_config.json", lambda d: d.__setitem__("shift", "abc"))),
            early=False,
        ),
        Probe(
            "models",
            "flow scheduler shift 0",
            on(model_variant("flow", "scheduler/scheduler_config.json", lambda d: d.__setitem__("shift", 0))),
            early=False,
        ),
        Probe("models", "the UNet folder missing", on(model_variant("demo", "unet", remove=True)), early=False),
        Probe(
            "models", "the tokenizer folder missing", on(model_variant("demo", "tokenizer", remove=True)), early=False
        ),
        Probe(
            "models",
            "text encoder width changed",
            on(
                model_variant(
                    "demo", "text_encoder/config.json", lambda d: d.__setitem__("hidden_size", d["hidden_size"] * 2)
                )
            ),
            early=False,
        ),
        Probe(
            "models",
            "a derived folder edits",
            on(model_variant("demo", "leditspp.json", rec("steps", 2))),
            "work",
            check=image_ok("out/x.png"),
        ),
    ]
    return probes


def eval_probes() -> list[Probe]:
    base = ("eval", "shapes", "--scenes", "1", "--quiet", "-o", "{root}/ev")
    probes = [
        Probe("eval", "--model 'demo,'", cli(*base, "--model", "demo,")),
        Probe("eval", "--model demo,missing", cli(*base, "--model", "demo,{root}/missing")),
        Probe("eval", "--sweep preserve=0,0", cli(*base, "--sweep", "preserve=0,0")),
        Probe("eval", "--sweep bogus=1", cli(*base, "--sweep", "bogus=1")),
        Probe("eval", "--sweep scale=abc", cli(*base, "--sweep", "scale=abc")),
        Probe("eval", "--scenes 0", cli("eval", "shapes", "--scenes", "0", "-o", "{root}/ev")),
        Probe("eval", "--limit -1", cli(*base, "--limit", "-1")),
        Probe("eval", "--metrics bogus", cli(*base, "--metrics", "bogus")),
        Probe("eval", "an unknown suite", cli("eval", "nosuch", "-o", "{root}/ev")),
        Probe("eval", "tedbench without its data", cli("eval", "tedbench", "{root}/nodata", "-o", "{root}/ev")),
        Probe(
            "eval",
            "--resume after another --sweep keeps the rows",
            prepared(
                eval_once("--sweep", "preserve=0"), cli(*base, "--sweep", "preserve=1", "--resume", "--limit", "1")
            ),
            "work",
            early=False,
            check=rows_kept,
        ),
        Probe(
            "eval",
            "--resume with a NUL byte in metrics.csv",
            prepared(eval_then(nul_byte), cli(*base, "--resume", "--limit", "1")),
            early=False,
        ),
        Probe(
            "eval",
            "--resume with another --model",
            prepared(eval_once("--limit", "1"), cli(*base, "--resume", "--limit", "1", "--model", "demo-flow")),
            early=False,
        ),
    ]
    return probes


def eval_once(*extra: str) -> Callable[[Env], None]:
    def prepare(env: Env) -> None:
        cli("eval", "shapes", "--scenes", "1", "--limit", "1", "--quiet", "-o", "{root}/ev", *extra)(env)
        env.first_rows = rows(env)

    return prepare


def eval_then(change: Callable[[Path], None]) -> Callable[[Env], None]:
    def prepare(env: Env) -> None:
        eval_once()(env)
        change(env.root / "ev" / "metrics.csv")

    return prepare


def nul_byte(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-5] + b"\x00" + data[-4:])


def rows(env: Env) -> list[dict]:
    path = env.root / "ev" / "metrics.csv"
    return list(csv.DictReader(path.open(encoding="utf-8"))) if path.exists() else []


def rows_kept(env: Env) -> str | None:
    before = {r["item"] for r in env.first_rows}
    after = {r["item"] for r in rows(env)}
    lost = before - after
    return f"{len(lost)} finished row(s) dropped" if lost else None


def api_probes() -> list[Probe]:
    def batch(**kw: object) -> Callable[[Env], object]:
        def run(env: Env) -> object:
            from leditspp.batch import BatchEdit, plan_edits

            return plan_edits(BatchEdit(**{"images": (env.p("img.png"),), "output": env.p("out/x.png"), **kw}))

        return run

    def demo_editor() -> object:
        from leditspp import Editor

        return Editor.from_pretrained("demo")

    def invert(**kw: object) -> Callable[[Env], object]:
        return lambda env: demo_editor().invert(env.p("img.png"), **{"steps": 2, **kw})

    def edit_with(edits: object, **kw: object) -> Callable[[Env], object]:
        def run(env: Env) -> object:
            from leditspp import Inversion

            return demo_editor().edit(Inversion.load(env.shared / "inv.safetensors"), edits, **kw)

        return run

    def memory(**kw: object) -> Callable[[Env], object]:
        from leditspp.offload import MemoryPlan

        return lambda env: MemoryPlan(**kw)

    def model_options(**kw: object) -> Callable[[Env], object]:
        from leditspp.model_options import ModelOptions

        return lambda env: ModelOptions(**kw)

    def an_edit(*args: object, **kw: object) -> Callable[[Env], object]:
        from leditspp import Edit

        return lambda env: Edit(*args, **kw)

    def evaluate(*args: object, **kw: object) -> Callable[[Env], object]:
        from leditspp.evaluation import evaluate as run

        return lambda env: run(*args, out=env.p("ev"), **kw)

    cases = {
        "BatchEdit(edits='hat')": batch(edits="hat"),
        "BatchEdit(images='img.png')": lambda env: batch(images=env.p("img.png"))(env),
        "ModelOptions(dtype='float8')": model_options(dtype="float8"),
        "BatchEdit(settings={'steps': '5'})": batch(edits=("+hat",), settings={"steps": "5"}),
        "MemoryPlan(fp8='no')": memory(fp8="no"),
        "MemoryPlan(offload='x')": memory(offload="x"),
        "Edit(scale='a')": an_edit("hat", scale="a"),
        "Edit(5)": an_edit(5),
        "Edit(threshold=2)": an_edit("hat", threshold=2),
        "Edit(scale=nan)": an_edit("hat", scale=math.nan),
        "Editor.from_pretrained('/nonexistent')": lambda env: __import__("leditspp").Editor.from_pretrained(
            "/nonexistent"
        ),
        "invert(steps='5')": invert(steps="5"),
        "invert(skip=2)": invert(skip=2),
        "invert(seed=-1)": invert(seed=-1),
        "invert(source_guidance=1e30)": invert(source_guidance=1e30),
        "edit(inversion, 5)": edit_with(5),
        "edit(mask_mode='bogus')": edit_with("+hat", mask_mode="bogus"),
        "edit(preserve=-1)": edit_with("+hat", preserve=-1),
        "edit(guidance_rescale=2)": edit_with("+hat", guidance_rescale=2),
        "Inversion.load('missing')": lambda env: __import__("leditspp").Inversion.load(env.p("missing.safetensors")),
        "evaluate('nosuch')": evaluate("nosuch"),
        "evaluate('shapes', scenes=0)": evaluate("shapes", scenes=0),
    }
    late = {
        "invert(steps='5')",
        "invert(skip=2)",
        "invert(seed=-1)",
        "invert(source_guidance=1e30)",
        "edit(inversion, 5)",
        "edit(mask_mode='bogus')",
        "edit(preserve=-1)",
        "edit(guidance_rescale=2)",
        "Editor.from_pretrained('/nonexistent')",
    }
    probes = [Probe("python", name, call(fn), early=name not in late) for name, fn in cases.items()]
    probes.append(Probe("python", "a plain edit", call(edit_with(["+hat"])), "work"))
    return probes


def web_probes() -> list[Probe]:
    settings = {
        "steps": 2,
        "skip": 0.15,
        "seed": 0,
        "solver": "dpmsolver++",
        "source_prompt": "",
        "source_guidance": 3.5,
        "negative_prompt": "",
        "height": None,
        "width": None,
        "mask_mode": "intersect",
        "guidance_rescale": 0.0,
        "preserve": "off",
    }
    row = ["red circle", "+", 8, 0.9, None, None]

    def request(image: str | None = "img.png", rows: list | None = None, **changes: object) -> Callable[[Env], object]:
        def run(env: Env) -> object:
            from leditspp.webui import EditorService, run_edit

            service = _services.setdefault("demo", EditorService())
            value = env.p(image) if image else None
            return run_edit(service, {"background": value, "layers": []}, rows or [row], {**settings, **changes})

        return run

    def requests_of_a_server(env: Env) -> object:
        """Three requests of one server that then stops: the folders their files went to."""
        import gc

        from leditspp.webui import EditorService, run_edit

        service = EditorService()
        value = {"background": env.p("img.png"), "layers": []}
        env.folders = {Path(run_edit(service, value, [row], settings)[3]).parent for _ in range(3)}
        del service
        gc.collect()
        return env.folders

    def no_temp_left(env: Env) -> str | None:
        left = [f for f in env.folders if f.exists()]
        many = f"{len(env.folders)} folders for 3 requests" if len(env.folders) > 1 else ""
        return "; ".join(filter(None, [many, f"{len(left)} left after the server stopped" if left else ""])) or None

    return [
        Probe("web", "no image", call(request(None))),
        Probe("web", "a text file as image", prepared(write("t.png", "x"), call(request("t.png")))),
        Probe("web", "scale cell 'abc'", call(request(rows=[["hat", "+", "abc", None, None, None]]))),
        Probe("web", "scale cell 1e308", call(request(rows=[["hat", "+", 1e308, None, None, None]]))),
        Probe("web", "threshold cell 2", call(request(rows=[["hat", "+", None, 2, None, None]]))),
        Probe("web", "direction cell '?'", call(request(rows=[["hat", "?", None, None, None, None]]))),
        Probe("web", "steps 0", call(request(steps=0))),
        Probe("web", "source guidance 1e30", call(request(source_guidance=1e30))),
        Probe("web", "preserve 'x'", call(request(preserve="x"))),
        Probe("web", "requests leave no temp folder", call(requests_of_a_server), "work", check=no_temp_left),
        Probe(
            "web",
            "serve --max-upload-mb 20 builds",
            with_patch("leditspp.webui.serve", lambda *a, **k: None, cli("serve", "--max-upload-mb", "20")),
            "work",
        ),
    ]


_services: dict[str, object] = {}


def all_probes() -> list[Probe]:
    return [
        *flag_probes(),
        *file_probes(),
        *recipe_probes(),
        *inversion_probes(),
        *model_probes(),
        *eval_probes(),
        *api_probes(),
        *web_probes(),
    ]


# --- the run --------------------------------------------------------------------------------


def snapshot(root: Path, names: tuple[str, ...]) -> dict[str, bytes | None]:
    return {n: (root / n).read_bytes() if (root / n).exists() else None for n in names}


def run_probe(probe: Probe, shared: Path, work: Path, index: int) -> tuple[str, Outcome, float]:
    env = Env(work / f"p{index:03d}", shared)
    env.root.mkdir(parents=True)
    fresh(env)
    env.started = time.time()
    probe_env[:] = [env]
    if isinstance(probe.act, prepared):
        probe.act.prepare(env)
    before = snapshot(env.root, probe.keep)
    start = time.perf_counter()
    with counted_loads(env):
        try:
            outcome = probe.act(env)
        except Exception as exc:
            outcome = Outcome(1, f"probe set-up failed: {type(exc).__name__}: {exc}", crashed=True)
        outcome.loads = env.loads[0]
        after = snapshot(env.root, probe.keep)
        changed = [n for n in probe.keep if before[n] != after[n]]
        found = verdict(probe, outcome, changed)
    return found, outcome, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="catalogue", help="folder for catalogue.md and catalogue.csv")
    parser.add_argument("-k", help="only probes whose area or name contains one of these (comma-separated)")
    args = parser.parse_args()
    logging_quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = args.k.split(",") if args.k else [""]
    probes = [p for p in all_probes() if any(k in f"{p.area} {p.name}" for k in wanted)]
    records = []
    with tempfile.TemporaryDirectory(prefix="catalogue-") as tmp, open(out / "catalogue.csv", "w", newline="") as f:
        table = csv.writer(f)  # written as it goes: a run cut short keeps what it found
        table.writerow(["area", "probe", "expected", "verdict", "exit", "message", "seconds"])
        shared = Path(tmp) / "shared"
        make_shared(shared)
        for i, probe in enumerate(probes):
            found, outcome, seconds = run_probe(probe, shared, Path(tmp), i)
            records.append((probe, found, outcome))
            table.writerow(
                [probe.area, probe.name, probe.expect, found, outcome.code, outcome.message, f"{seconds:.1f}"]
            )
            f.flush()
            mark = "  " if found in GOOD else "!!"
            print(f"{mark} {found:13s} {probe.area:10s} {probe.name}  [{outcome.message[:110]}]", flush=True)
    write_report(out, records)
    bad = sum(found not in GOOD for _, found, _ in records)
    print(f"{len(records)} probes, {len(records) - bad} handled well, {bad} defects → {out / 'catalogue.md'}")
    return 1 if bad else 0


def logging_quiet() -> None:
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_report(out: Path, records: list) -> None:
    """``catalogue.md``: the verdicts counted per area, then every defect with what it said."""
    areas = list(dict.fromkeys(p.area for p, *_ in records))
    lines = ["| area | probes | " + " | ".join(VERDICTS) + " |", "|---" * (len(VERDICTS) + 2) + "|"]
    for area in [*areas, "all"]:
        counts = Counter(found for p, found, _ in records if area in ("all", p.area))
        lines.append(f"| {area} | {sum(counts.values())} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    defects = [f"- {p.area}: {p.name} — **{found}** ({o.message})" for p, found, o in records if found not in GOOD]
    text = "\n".join(["# Fault catalogue", "", *lines, "", "## Defects", "", *(defects or ["none"]), ""])
    (out / "catalogue.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
