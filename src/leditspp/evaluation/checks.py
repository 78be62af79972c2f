"""What makes an evaluation's numbers trustworthy: its settings refused early, its diverged edits refused late.

Before any model loads, every setting an item will use — a benchmark row's cell, an ``eval``
flag, a ``--sweep`` value — goes through the editor's own check (:func:`check_setting`: the
validators the command line and the API use, no second copy), so a bad value stops the run with
one line naming where it came from, instead of failing every item after the model has loaded.

After each edit, :func:`~leditspp.divergence.check_edited` (the editor's own check) refuses an
output that diverged — latents holding NaN or inf, or an image that is one colour everywhere while
its input is not — as a failed item with its reason, never a scored row: an all-black image still
has a PSNR.
"""

from __future__ import annotations

from typing import Any

from .. import defaults
from ..edits import Edit
from ..errors import LeditsError
from ..masking import check_preserve
from ..solvers import validate_steps
from ..validation import check_seed

#: The settings an evaluation item may carry, each checked by :func:`check_setting`.
SETTINGS = ("steps", "skip", "seed", "scale", "threshold", "preserve")


def check_setting(key: str, value: Any, concept: str = "every concept") -> None:
    """Refuse ``value`` for the evaluation setting ``key`` as the editor would (:class:`LeditsError`
    naming the setting, its range and the value): ``steps`` and ``skip`` with
    :func:`~leditspp.solvers.validate_steps`, ``seed`` with :func:`~leditspp.validation.check_seed`,
    ``scale`` and ``threshold`` with :class:`~leditspp.edits.Edit`'s own validation (its message
    names ``concept``); ``preserve`` with :func:`~leditspp.masking.check_preserve`."""
    if key == "preserve":
        check_preserve(preserve_of({key: value}), defaults.MASK_MODE)
    elif key == "steps":
        validate_steps(value, defaults.SKIP)
    elif key == "skip":
        validate_steps(defaults.STEPS, value)
    elif key == "seed":
        check_seed(value)
    elif key in ("scale", "threshold"):
        Edit(concept, **{key: value})
    else:
        raise LeditsError(f"unknown evaluation setting {key!r}; known: {', '.join(SETTINGS)}")


def whole(value: Any) -> Any:
    """A whole float (a ``--sweep`` value, a manifest's number) as an int; anything else as it is,
    for the checks to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def preserve_of(params: dict[str, Any]) -> Any:
    """An item's ``preserve`` for :meth:`Editor.edit`: None where it has none, else :func:`whole`."""
    return whole(params.get("preserve"))


def check_given(
    flags: dict[str, Any], sweep: dict[str, list[float]], recommended: dict[str, Any] | None = None
) -> None:
    """Check the settings a run starts from, each error naming where the value came from: each
    flag (``--steps 0`` → ``--steps: steps must be …``), each sweep value (``--sweep steps=0,4`` →
    ``--sweep steps=0: …``) and the model's ``recommended`` settings that no flag replaces."""
    unused = {**flags, **sweep}  # recommended settings that a flag or the sweep replaces are not used
    given = [(f"the model's recommended {key}", key, v) for key, v in (recommended or {}).items() if key not in unused]
    given += [(f"--{key}", key, value) for key, value in flags.items()]
    given += [(f"--sweep {key}={value}", key, value) for key, values in sweep.items() for value in values]
    for origin, key, value in given:
        try:
            check_setting(key, value)
        except LeditsError as exc:
            raise LeditsError(f"{origin}: {exc}") from None
