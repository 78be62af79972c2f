"""What a command says once, at start, on stderr: the model (what it resolved to, its family),
the device, dtype and memory plan, and the settings the run uses with where each came from
(``flag``, ``recipe FILE``, ``inversion FILE``, ``leditspp.json``, ``recommended``, ``default``);
then its warnings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import defaults
from ..advice import dtype_on_cpu
from ..errors import LeditsError
from ..models.families import family_of, parts_of_folder
from ..models.loading import resolve_model
from ..validation import check_device, default_dtype


def say(line: str) -> None:
    """One line of the command's own on stderr."""
    print(f"leditspp: {line}", file=sys.stderr)


def say_start(args: argparse.Namespace, model: str, origin: str, settings: Mapping[str, tuple[Any, str]]) -> None:
    """The model and how it will run, then the settings (name → (value, origin)); nothing with --quiet."""
    if args.quiet:
        return
    say(f"model {model} ({origin}){_resolved(model)}, family {_family(model)}; {_how(args)}")
    if settings:
        say("settings: " + ", ".join(f"{key} {value!r} ({where})" for key, (value, where) in settings.items()))


def say_warnings(args: argparse.Namespace, found: Sequence[str | None]) -> None:
    """The run's surprises (:mod:`leditspp.advice`), half precision on a CPU first; said even with
    --quiet, since each names something to fix."""
    for line in [dtype_on_cpu(check_device(args.device).type, args.dtype), *found]:
        if line:
            say(f"warning: {line}")


def _resolved(model: str) -> str:
    """`` → FOLDER`` where ``model`` names a built-in demo's folder, else nothing."""
    try:
        folder = resolve_model(model)
    except LeditsError:
        return ""
    return f" → {folder}" if folder != model else ""


def _family(model: str) -> str:
    """The family a local model's configs say, before it loads (a hub id's: once loaded)."""
    try:
        folder = resolve_model(model)
        parts = parts_of_folder(folder) if Path(folder).is_dir() else None
    except (LeditsError, OSError, ValueError):
        parts = None
    family = family_of(parts) if parts else None
    return family.family if family else "known once loaded"


def _how(args: argparse.Namespace) -> str:
    """Device, dtype and memory plan, each with where it came from."""
    device = check_device(args.device)
    dtype = args.dtype or str(default_dtype(device)).removeprefix("torch.")
    where = {key: "flag" if getattr(args, key) is not None else "default" for key in ("device", "dtype")}
    plan = f"memory plan {args.offload} ({'default' if args.offload == defaults.OFFLOAD else 'flag'})"
    return f"device {device} ({where['device']}), dtype {dtype} ({where['dtype']}), {plan}"
