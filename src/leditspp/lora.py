"""LoRAs on a loaded pipeline: named as ``PATH[:SCALE]`` (a file, a folder or a hub id), loaded
with the pipeline's own diffusers loader (``load_lora_weights``) and recorded, since they change
the model, in the editor's fingerprint and in every inversion it makes."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LeditsError


@dataclass(frozen=True)
class Lora:
    """A LoRA as an inversion records it: ``source`` (a hub id, or a local path made absolute)
    and the ``scale`` its weights are applied with."""

    source: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str | tuple[str, float] | Lora) -> Lora:
        """``"PATH"``, ``"PATH:SCALE"``, ``(PATH, SCALE)`` or a :class:`Lora` → a :class:`Lora`."""
        if isinstance(text, Lora):
            return text
        if isinstance(text, tuple):
            return cls.of(*text)
        if not isinstance(text, str) or not text:
            raise LeditsError(f"a LoRA is given as PATH or PATH:SCALE; got {text!r}")
        head, _, tail = text.rpartition(":")
        try:
            return cls.of(head, float(tail)) if head else cls.of(text)
        except ValueError:  # the colon belongs to the path (C:\... or a scale that is no number)
            return cls.of(text)

    @classmethod
    def of(cls, source: str, scale: float = 1.0) -> Lora:
        """A LoRA of ``source`` (a local path is made absolute) at ``scale`` (finite)."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise LeditsError(f"a LoRA's scale must be a finite number; got {scale!r}")
        path = Path(source).expanduser()
        return cls(str(path.resolve()) if path.exists() else source, float(scale))

    def __str__(self) -> str:
        return f"{self.source}:{self.scale:g}"


def describe(loras: tuple[Lora, ...]) -> str:
    """The LoRAs as an inversion's metadata records them: JSON ``[[source, scale], …]``, "" for none."""
    return json.dumps([[lora.source, lora.scale] for lora in loras]) if loras else ""


def parse_recorded(text: str) -> tuple[Lora, ...]:
    """:func:`describe`'s text back as LoRAs (unreadable text: none, as the fingerprint still differs)."""
    try:
        return tuple(Lora(str(s), float(k)) for s, k in json.loads(text)) if text else ()
    except (TypeError, ValueError):
        return ()


def with_loras(fingerprint: str, loras: tuple[Lora, ...]) -> str:
    """The fingerprint of a model with ``loras`` applied: the base model's where there are none."""
    if not loras:
        return fingerprint
    return hashlib.sha256(f"{fingerprint} {describe(loras)}".encode()).hexdigest()[:16]


def apply_loras(pipe: Any, loaded: tuple[Lora, ...], new: tuple[Lora, ...]) -> None:
    """Load the ``new`` LoRAs into ``pipe`` (a diffusers pipeline with a LoRA loader; ``loaded``:
    those it holds already, adapters ``lora0``, ``lora1`` …) and set every LoRA's scale."""
    if not hasattr(pipe, "load_lora_weights"):
        raise LeditsError(
            f"{type(pipe).__name__} has no LoRA loader in diffusers, so LoRAs cannot be applied to this model"
        )
    for k, lora in enumerate(new, start=len(loaded)):
        try:
            pipe.load_lora_weights(lora.source, adapter_name=f"lora{k}")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise LeditsError(
                f"cannot load the LoRA {lora.source!r}: {str(exc).splitlines()[0] if str(exc) else repr(exc)} — "
                "give a LoRA .safetensors file, a folder holding one, or a hub id, made for this model's family"
            ) from exc
    every = (*loaded, *new)
    pipe.set_adapters([f"lora{k}" for k in range(len(every))], [lora.scale for lora in every])
