"""The registry of model families: which adapter serves a set of diffusers components.

A family is one adapter class (a file under ``models/``, or anywhere: :func:`register` takes a
class defined outside the package), a :class:`~.base.ModelAdapter` whose ``from_components``
composes its parts, that declares, as class attributes and class methods:

* ``family`` (a short name, recorded in inversions) and ``title`` (one line for the list of
  supported families that every refusal shows);
* ``options``: the names of the keyword options its :meth:`from_components` accepts (``mask_level``,
  ``spacing``, ``max_sequence_length`` …); any other option given is refused, not ignored;
* ``matches(parts)``: whether a model is of this family, from its :data:`Parts` — the class name
  and config of each component, which a loaded pipeline and a folder on disk (``model_index.json``
  and the ``config.json`` files) both give, so the family is known before a model loads;
* ``size_rule(parts, options)``: the multiple image sides must have (declared once: the loaded
  adapter's ``size_multiple`` and the command line's check before loading both use it);
* ``from_components(components, pipeline_config, **options)``: the adapter, its parts built from the components;
* optionally ``text_inputs`` and ``fits(parts)``: the text encoders and tokenizers it reads and
  what its denoiser needs of them, checked before it loads and before the adapter is built
  (:mod:`.components`);
* optionally ``required``: the components it needs beside its denoiser (default :data:`REQUIRED`: a
  VAE, a tokenizer and a scheduler; DeepFloyd IF, in pixel space, has no VAE);
* optionally ``size_limit(parts)``: the largest image its denoiser has positions for
  (:class:`SizeLimit`; SD3's learned position grid), checked before an image is encoded;
* optionally ``recommended(parts, pipeline_config)``: the edit settings the family's checkpoints
  are made for (keys of ``models.settings.RECOMMENDABLE``: the 4 steps of a distilled [klein], a base
  model's usual step count), what the command line, the web UI and ``Editor.recommended``
  default to where the model's ``leditspp.json`` says nothing else.

Families are tried in registration order; the first whose ``matches`` is true builds the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import LeditsError
from .components import check_components


@dataclass(frozen=True)
class Part:
    """One component as a family sees it before and after loading: its class name and config."""

    kind: str
    config: Mapping[str, Any]


#: Component name → :class:`Part` (only components that are present).
Parts = dict[str, Part]


class Family(Protocol):
    family: str
    title: str
    options: frozenset[str]

    @classmethod
    def matches(cls, parts: Parts) -> bool: ...

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int: ...

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Any: ...


FAMILIES: list[type[Family]] = []
#: The components a family needs beside its denoiser unless it declares its own ``required``.
REQUIRED = ("vae", "tokenizer", "scheduler")


def register(family: type[Family]) -> type[Family]:
    """Add ``family`` to the registry (usable as a class decorator); later registrations of the
    same ``family`` name replace the earlier one."""
    FAMILIES[:] = [f for f in FAMILIES if f.family != family.family]
    FAMILIES.append(family)
    return family


@contextmanager
def registered(family: type[Family]) -> Iterator[type[Family]]:
    """``family`` registered for the duration of the block (tests, plugins tried out)."""
    before = list(FAMILIES)
    register(family)
    try:
        yield family
    finally:
        FAMILIES[:] = before


def supported() -> str:
    return "; ".join(f.title for f in FAMILIES)


def refuse(reason: str) -> LeditsError:
    """A refusal naming ``reason`` and every supported family."""
    return LeditsError(f"{reason}; supported families: {supported()}")


def parts_of(components: Mapping[str, Any]) -> Parts:
    """:data:`Parts` of loaded components (a pipeline's ``components``)."""
    parts = {}
    for name, value in components.items():
        if value is None:
            continue
        config = getattr(value, "config", None)
        if hasattr(config, "to_dict"):  # transformers' configs
            config = config.to_dict()
        config = dict(config) if isinstance(config, Mapping) else {}
        if name == "scheduler":
            config = {"_class_name": type(value).__name__, **config}
        parts[name] = Part(type(value).__name__, config)
    return parts


def parts_of_folder(folder: str | Path) -> Parts | None:
    """:data:`Parts` of a diffusers folder, read from its JSON files without loading anything;
    None where it is not such a folder."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parts: Parts = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[1] is None:
            continue
        config: dict[str, Any] = {}
        for file in ("config.json", "scheduler_config.json"):
            try:
                config = json.loads((folder / name / file).read_text(encoding="utf-8"))
                break
            except (OSError, ValueError):
                continue
        if name == "scheduler":
            config = {"_class_name": spec[1], **config}
        parts[name] = Part(str(spec[1]), config)
    return parts


def pipeline_config_of_folder(folder: str | Path) -> dict[str, Any]:
    """The pipeline's own settings in a folder's ``model_index.json`` (e.g. [klein]'s
    ``is_distilled``): its entries that are neither components nor ``_``-prefixed."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(index, dict):
        return {}
    return {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)}


def family_of(parts: Parts) -> type[Family] | None:
    return next((f for f in FAMILIES if f.matches(parts)), None)


def recommended_of(parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
    """What the family of ``parts`` recommends for this checkpoint (its optional ``recommended``
    rule); ``{}`` where it has none or the model is of no family."""
    rule = getattr(family_of(parts), "recommended", None)
    return dict(rule(parts, pipeline_config)) if rule else {}


def check_options(family: type[Family], options: Mapping[str, Any]) -> None:
    """Refuse options ``family`` cannot use (they would silently do nothing)."""
    unknown = sorted(set(options) - set(family.options))
    if unknown:
        accepted = ", ".join(sorted(family.options)) or "none"
        raise LeditsError(
            f"{family.family} models do not take {', '.join(unknown)} (options for {family.family}: {accepted}); "
            "leave them out"
        )


def adapter_from_components(
    components: Mapping[str, Any], pipeline_config: Mapping[str, Any] | None = None, **options: Any
) -> Any:
    """The adapter of the family the loaded ``components`` belong to, built with ``options``
    (each checked against what the family accepts); a refusal lists every family."""
    components = dict(components)
    parts = parts_of(components)
    family = family_of(parts)
    missing = [k for k in getattr(family, "required", REQUIRED) if k not in parts]
    if "unet" not in parts and "transformer" not in parts:
        missing.insert(0, "a denoiser (unet or transformer)")
    if missing:
        raise refuse(f"the model lacks {', '.join(missing)}")
    if family is None:
        network = parts.get("transformer") or parts["unet"]
        added = network.config.get("addition_embed_type")
        detail = f" with addition_embed_type={added!r}" if added else " with these components"
        raise refuse(f"{network.kind} models{detail} ({', '.join(sorted(parts))}) are not supported")
    check_options(family, options)
    check_components(family, components, parts)
    return family.from_components(components, dict(pipeline_config or {}), **options)


@dataclass(frozen=True)
class SizeLimit:
    """The largest image (pixels per side) a denoiser has positions for, and the config that says so."""

    height: int
    width: int
    reason: str


def check_size(adapter: Any, height: int, width: int) -> None:
    """Refuse a processing size over the largest the adapter's family allows (its ``size_limit``)."""
    rule = getattr(adapter, "size_limit", None)
    limit = rule(parts_of(adapter.components())) if rule else None
    if limit is not None and (height > limit.height or width > limit.width):
        raise LeditsError(
            f"the image would be processed at {width}×{height} (width×height), but this model takes at most "
            f"{limit.width}×{limit.height}: {limit.reason} — resize it, or pass height and width "
            "(--height/--width) within that"
        )


def size_multiple_of_folder(folder: str | Path, options: Mapping[str, Any]) -> int | None:
    """The side multiple of a local model folder, by its family's own rule, without loading it;
    None where the folder or its family cannot be told."""
    parts = parts_of_folder(folder)
    family = family_of(parts) if parts else None
    if family is None or parts is None:
        return None
    try:
        return family.size_rule(parts, {k: v for k, v in options.items() if k in family.options})
    except (KeyError, TypeError, ValueError):
        return None
