"""Flags shared by several commands, read into the library's plain values."""

from __future__ import annotations

import argparse

from ..distributed import RayOptions


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """``--ray``, ``--ray-workers``, ``--ray-env`` (None without ``--ray``)."""
    if args.ray is None:
        return None
    return RayOptions(args.ray, args.ray_workers, args.ray_env)
