"""Flags shared by several commands, read into the library's plain values."""

from __future__ import annotations

import argparse

from ..distributed import RayOptions
from ..model_options import ModelOptions


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """``--ray``, ``--ray-workers``, ``--ray-env`` (None without ``--ray``)."""
    if args.ray is None:
        return None
    return RayOptions(args.ray, args.ray_workers, args.ray_env)


def model_options(args: argparse.Namespace) -> ModelOptions:
    """``--device``, ``--dtype``, ``--offload``, ``--compile``, and where the command has them
    ``--base`` and ``--lora``: how the model loads."""
    return ModelOptions(
        device=args.device,
        dtype=args.dtype,
        offload=args.offload,
        compile=args.compile,
        base=getattr(args, "base", None),
        loras=tuple(getattr(args, "lora", ())),
    )
