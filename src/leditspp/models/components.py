"""What a model's components must agree on, checked before its weights load (from the folder's
JSON files) and again where a loaded pipeline becomes a family's adapter: the scheduler's values,
each text encoder's width and depth against what the denoiser reads, and each tokenizer's kind,
vocabulary and chat template. A mismatch is one error naming the component, the value and the fix,
instead of a crash inside the network or — worse — a tokenizer without a vocabulary that makes
every concept the same ``<unk>`` tokens.

A family declares what it reads (both optional, as ``recommended`` is):

* ``text_inputs``: a class attribute, the :class:`TextInput` pairs of text encoder and tokenizer
  it encodes prompts with (and whether the pipeline formats prompts with a chat template);
* ``fits(parts)``: a class method, the :class:`Fit` rules its denoiser's config sets for the text
  encoders' widths and depths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LeditsError, is_int, is_number
from .base import tokenize

if TYPE_CHECKING:  # families.py calls these checks
    from .families import Family, Part, Parts

#: A plain sentence every text encoder's tokenizer knows word by word (no unknown token).
PROBE_TEXT = "a photo of a cat"


@dataclass(frozen=True)
class TextInput:
    """A text encoder and the tokenizer a family encodes prompts with, by component name."""

    encoder: str
    tokenizer: str
    #: The pipeline formats every prompt with the tokenizer's chat template.
    chat_template: bool = False


@dataclass(frozen=True)
class Fit:
    """The ``measure`` (``width``, ``projection`` or ``layers``) of ``encoders``, summed, must be
    ``compare`` (``==``, ``<=``, ``>=``) ``value``, which ``reason`` explains."""

    encoders: tuple[str, ...]
    measure: str
    value: float | None  # None: the denoiser's config does not say (nothing to check)
    reason: str
    compare: str = "=="


#: Config keys of each measure, tried in order (T5 names its width d_model; Qwen2.5-VL nests its
#: language model's config under text_config).
_MEASURE_KEYS = {
    "width": ("hidden_size", "d_model"),
    "projection": ("projection_dim",),
    "layers": ("num_hidden_layers", "num_layers"),
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _positive_int(v: Any) -> bool:
    return is_int(v) and v >= 1


def _positive(v: Any) -> bool:
    return is_number(v) and math.isfinite(v) and v > 0


def _fraction(v: Any) -> bool:
    return is_number(v) and 0 < v < 1


#: Scheduler config values leditspp reads, with what each must be (a key absent or null takes
#: the scheduler's default).
SCHEDULER_VALUES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "num_train_timesteps": ("an integer ≥ 1", _positive_int),
    "shift": ("a number > 0", _positive),
    "base_shift": ("a finite number", lambda v: is_number(v) and math.isfinite(v)),
    "max_shift": ("a finite number", lambda v: is_number(v) and math.isfinite(v)),
    "base_image_seq_len": ("an integer ≥ 1", _positive_int),
    "max_image_seq_len": ("an integer ≥ 1", _positive_int),
    "shift_terminal": ("a number in (0, 1)", _fraction),
    "beta_start": ("a number in (0, 1)", _fraction),
    "beta_end": ("a number in (0, 1)", _fraction),
    "steps_offset": ("an integer ≥ 0", lambda v: is_int(v) and v >= 0),
    "original_inference_steps": ("an integer ≥ 1", _positive_int),
    "timestep_scaling": ("a number > 0", _positive),
}


def check_parts(family: type[Family], parts: Parts, folder: str | Path | None = None) -> None:
    """Refuse configs that do not fit together: the scheduler's values and the family's
    :class:`Fit` rules. ``folder``: where the configs were read (named in the error)."""
    if "scheduler" in parts:
        check_scheduler(parts["scheduler"].config, _file(folder, "scheduler", "scheduler_config.json"))
    rule = getattr(family, "fits", None)
    for fit in rule(parts) if rule else ():
        _check_fit(fit, parts, folder)


def check_components(family: type[Family], components: Mapping[str, Any], parts: Parts) -> None:
    """:func:`check_parts` on loaded ``components`` (whose :data:`Parts` are ``parts``), and their
    tokenizers' kind, vocabulary and chat template (see :class:`TextInput`)."""
    check_parts(family, parts)
    for text in getattr(family, "text_inputs", ()):
        tokenizer = components.get(text.tokenizer)
        if tokenizer is not None and text.encoder in parts:
            check_tokenizer(text, tokenizer, parts[text.encoder], family.family)


def check_scheduler(config: Mapping[str, Any], where: str) -> None:
    """Refuse a scheduler config value of the wrong type or range, naming the file and the key."""
    for key, (what, ok) in SCHEDULER_VALUES.items():
        value = config.get(key)
        if value is not None and not ok(value):
            raise LeditsError(
                f"{where}: {key} must be {what}; got {value!r} — set it to the checkpoint's value, or remove "
                "the key to use the scheduler's default"
            )
    lengths = config.get("base_image_seq_len"), config.get("max_image_seq_len")
    if config.get("use_dynamic_shifting") and lengths[0] is not None and lengths[0] == lengths[1]:
        raise LeditsError(
            f"{where}: base_image_seq_len and max_image_seq_len are both {lengths[0]}, but the dynamic shift is "
            "the line between them — set them to the checkpoint's values"
        )


def check_tokenizer(text: TextInput, tokenizer: Any, encoder: Part, family: str) -> None:
    """Refuse a tokenizer that is not the text encoder's: more tokens than the encoder's
    vocabulary, a plain sentence read as unknown tokens (no vocabulary), or no chat template
    where the pipeline formats prompts with one."""
    name, kind = text.tokenizer, f"{text.tokenizer} ({type(tokenizer).__name__}, {len(tokenizer)} tokens)"
    fix = f"copy the {name}/ folder of the checkpoint this {text.encoder} comes from into the model folder"
    vocabulary = _measure_of(encoder.config, "vocab_size")
    if vocabulary is not None and len(tokenizer) > vocabulary:
        raise LeditsError(
            f"{kind} has more tokens than the {vocabulary} of {text.encoder}'s vocabulary: it is another "
            f"model's tokenizer — {fix}"
        )
    pieces = _words(tokenizer, PROBE_TEXT)
    if not pieces or tokenizer.unk_token in pieces:
        raise LeditsError(
            f"{kind} reads {PROBE_TEXT!r} as {pieces}: it has no vocabulary, so every prompt would encode "
            f"the same — {fix}"
        )
    if text.chat_template and not getattr(tokenizer, "chat_template", None):
        raise LeditsError(
            f"{kind} has no chat template, and {family}'s pipeline formats every prompt with it — {fix} "
            "(with its chat template)"
        )


def _words(tokenizer: Any, text: str) -> list[str]:
    """The tokens of ``text`` but the start, end and padding ones (the unknown token kept)."""
    ids = tokenize(tokenizer, text).input_ids
    ends = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.cls_token_id}
    return tokenizer.convert_ids_to_tokens([i for i in ids if i not in ends - {None}])


def config_int(parts: Parts, component: str, key: str) -> int | None:
    """An integer of a component's config (one value given per block counts where all agree);
    None where the component or the key is missing."""
    value = parts[component].config.get(key) if component in parts else None
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]
    return int(value) if is_int(value) else None


def measure(part: Part, what: str) -> int | None:
    """A component's ``width``, ``projection`` or ``layers`` from its config; None where it has none."""
    return _measure_of(part.config, *_MEASURE_KEYS[what])


def _measure_of(config: Mapping[str, Any], *keys: str) -> int | None:
    nested = config.get("text_config")
    for source in (config, nested if isinstance(nested, Mapping) else {}):
        for key in keys:
            if is_int(source.get(key)):
                return int(source[key])
    return None


def _check_fit(fit: Fit, parts: Parts, folder: str | Path | None) -> None:
    """Refuse where the encoders of ``fit`` (all present, each measured) miss its value."""
    if fit.value is None or not all(name in parts for name in fit.encoders):
        return  # a missing encoder is the family's own refusal
    values = [measure(parts[name], fit.measure) for name in fit.encoders]
    if any(v is None for v in values) or _COMPARE[fit.compare](sum(values), fit.value):
        return
    names = " + ".join(f"{n} ({parts[n].kind})" for n in fit.encoders)
    shown = " + ".join(map(str, values)) + (f" = {sum(values)}" if len(values) > 1 else "")
    noun = {"width": "wide", "projection": "in its projection", "layers": "layers"}[fit.measure]
    where = f" in {folder}" if folder else ""
    need = {"==": "", "<=": "at most ", ">=": "at least "}[fit.compare]
    raise LeditsError(
        f"{names}{where}: {shown} {noun}, but {fit.reason}: it needs {need}{fit.value:g} — use the text "
        "encoder the denoiser was trained with (the checkpoint's own folders), not one from another model"
    )


def _file(folder: str | Path | None, component: str, name: str) -> str:
    return str(Path(folder) / component / name) if folder else f"the {component}'s config"
