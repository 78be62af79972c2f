"""How a model is loaded, as one value: every front end — the command line, the web UI,
:func:`~leditspp.evaluation.evaluate`, batch edits and their Ray workers — builds a
:class:`ModelOptions` once and carries it to where the model loads (a Ray worker loads its own).

Importing it loads neither torch nor diffusers: the command line builds it before any of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import defaults
from .errors import LeditsError, check_arguments
from .lora import Lora

if TYPE_CHECKING:
    from .editor import Editor

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Everything :meth:`~leditspp.Editor.from_pretrained` takes besides the model itself, by name.

    ``device``: ``"cuda"``, ``"cpu"``, … (None: CUDA where there is one); ``dtype``: one of
    ``defaults.DTYPES`` (None: fp16 on CUDA, fp32 on the CPU); ``offload``: the memory plan, one of
    ``defaults.OFFLOADS`` (:mod:`leditspp.offload`); ``compile``: ``torch.compile`` the denoiser
    once loaded (:meth:`~leditspp.Editor.compile`); ``base``: a single-file model's base;
    ``loras``: LoRAs as ``PATH[:SCALE]``. Checked when made, before anything loads.
    """

    device: str | None = None
    dtype: str | None = None
    offload: str = defaults.OFFLOAD
    compile: bool = False
    base: str | None = None
    loras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kinds = {"device": "text?", "offload": "text", "compile": "bool", "base": "text?", "loras": "texts"}
        check_arguments("ModelOptions", vars(self), kinds)
        if self.dtype not in (None, *defaults.DTYPES):
            dtypes = ", ".join(defaults.DTYPES)
            raise LeditsError(f"dtype must be None (the model's) or one of {dtypes}; got {self.dtype!r}")
        if self.offload not in defaults.OFFLOADS:
            raise LeditsError(f"offload must be one of {', '.join(defaults.OFFLOADS)}; got {self.offload!r}")
        for lora in self.loras:
            Lora.parse(lora)

    def load(self, model: str) -> Editor:
        """The :class:`~leditspp.Editor` of ``model`` (``"demo"``, a hub id, a folder or a single
        file), loaded with these options; says on the ``leditspp.jobs`` logger what it loads and
        how long it took."""
        import torch

        from .editor import Editor

        logger.info("loading model %s …", model)
        start = time.perf_counter()
        editor = Editor.from_pretrained(
            model,
            torch_dtype=getattr(torch, self.dtype) if self.dtype else None,
            device=self.device,
            offload=self.offload,
            base=self.base,
            loras=self.loras,
        )
        logger.info(
            "loaded model %s in %.1f s: family %s, memory plan %s",
            model,
            time.perf_counter() - start,
            editor.model.family,
            editor.plan.offload,
        )
        return editor.compile() if self.compile else editor
