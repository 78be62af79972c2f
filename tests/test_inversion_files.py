"""Inversion files: a round trip edits like the in-memory value; every damaged file is refused.

Each probe writes a corrupt copy of one small inversion; ``Inversion.load`` must raise
``LeditsError`` naming the file and the problem, and ``leditspp edit --inversion`` must exit 2
with one stderr line and write nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from leditspp import Inversion, LeditsError
from leditspp.cli import main
from leditspp.files import umask
from leditspp.inversion_file import TENSORS, InversionInfo, write

from .conftest import scene


@pytest.fixture(scope="module")
def inversion(editor) -> Inversion:
    return editor.invert(scene(), steps=3, seed=0)


@pytest.fixture(scope="module")
def good(inversion, tmp_path_factory) -> Path:
    return inversion.save(tmp_path_factory.mktemp("inversion") / "good.inv.safetensors")


def split(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its data bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def with_metadata(**changes: str | None) -> Callable[[Path, Inversion, Path], None]:
    """Rewrite metadata keys (None deletes) without touching the tensor bytes."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        header, data = split(src)
        meta = header["__metadata__"]
        for key, value in changes.items():
            if value is None:
                meta.pop(key)
            else:
                meta[key] = value
        dst.write_bytes(join(header, data))

    return probe


def with_info(**changes: object) -> Callable[[Path, Inversion, Path], None]:
    """Edit fields of the metadata's ``info`` JSON, as a hand edit would."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        info = {**dataclasses.asdict(inv.info), **changes}
        with_metadata(info=json.dumps(info))(src, inv, dst)

    return probe


def saved_with(**tensors: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path, Inversion, Path], None]:
    """Save (with a valid hash) an inversion whose named tensors were changed."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        dataclasses.replace(inv, **{k: f(getattr(inv, k)) for k, f in tensors.items()}).save(dst)

    return probe


def flip_byte(src: Path, inv: Inversion, dst: Path) -> None:
    """XOR the lowest byte of noise_maps' first float (little-endian: mantissa bits, still finite)."""
    header, data = split(src)
    start = header["noise_maps"]["data_offsets"][0]
    data = data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :]
    dst.write_bytes(join(header, data))


def without_denoised(src: Path, inv: Inversion, dst: Path) -> None:
    header, _ = split(src)
    tensors = {name: getattr(inv, name) for name in TENSORS if name != "denoised"}
    save_file(tensors, str(dst), metadata=header["__metadata__"])


def set_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[1, 0, 0, 0, 0] = float("nan")
    return t


def set_inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[0, 0, 1] = float("inf")
    return t


def v1_negative_height(src: Path, inv: Inversion, dst: Path) -> None:
    """A version-1 file (no hash) whose height was edited: the metadata checks still catch it."""
    with_info(height=-64)(src, inv, dst)
    with_metadata(format_version="1", sha256=None)(dst, inv, dst)


def as_version_1(make: Callable[[Path, Inversion, Path], None]) -> Callable[[Path, Inversion, Path], None]:
    """``make``'s file restated as format version 1, its hash removed."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        make(src, inv, dst)
        with_metadata(format_version="1", sha256=None)(dst, inv, dst)

    return probe


def rehashed(**changes: object) -> Callable[[Path, Inversion, Path], None]:
    """Save (with a valid hash) an inversion whose metadata fields were changed."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        write(dst, {name: getattr(inv, name) for name in TENSORS}, dataclasses.replace(inv.info, **changes))

    return probe


TWO_STEPS = {k: lambda t: t[:2] for k in ("noisy_latents", "denoised", "noise_maps")}
PROBES = {
    "nan-noise-maps": (saved_with(noise_maps=set_nan), "noise_maps holds NaN"),
    "inf-denoised": (saved_with(denoised=set_inf), "denoised holds infinite"),
    "flipped-byte": (flip_byte, "changed or corrupted"),
    "edited-source-prompt": (with_info(source_prompt="a cat"), "changed or corrupted"),
    "edited-height": (with_info(height=128), "128×64 pixels, the latents are 8×8: not one scale factor"),
    "hash-removed": (with_metadata(sha256=None), "no content hash"),
    "source-latents-shape": (saved_with(source_latents=lambda t: t[..., :-1]), "source_latents has shape"),
    "float16-noise-maps": (saved_with(noise_maps=torch.Tensor.half), "noise_maps is float16, not float32"),
    "float32-timesteps": (saved_with(timesteps=torch.Tensor.float), "timesteps is float32, not float64"),
    "steps-mismatch": (saved_with(**TWO_STEPS), "metadata says 3 steps"),
    "missing-tensor": (without_denoised, "lacks the tensor.* denoised"),
    "format-version-abc": (with_metadata(format_version="abc"), "format_version must be a positive integer"),
    "newer-version": (with_metadata(format_version="3"), "newer leditspp"),
    "v1-negative-height": (v1_negative_height, "'height' must be a positive integer"),
    "v1-changed-solver": (as_version_1(with_info(solver="ddpm")), "no content hash"),
    "v1-huge-noise-maps": (as_version_1(saved_with(noise_maps=lambda t: t * 1e30)), "no content hash"),
    "height-off-the-tensors": (rehashed(height=72), "72×64 pixels, the latents are 8×8"),
    "width-off-the-tensors": (rehashed(width=640), "64×640 pixels"),
    "source-guidance-1e30": (rehashed(source_guidance=1e30), r"source_guidance must be a number in \[0, 1000\]"),
    "unknown-solver": (rehashed(solver="euler"), "solver must be one of"),
    "noise-shift-2": (rehashed(noise_shift=2.0), "noise_shift is a fraction"),
    "info-not-json": (with_metadata(info="{height: 64"), "metadata is unreadable"),
    "not-an-inversion": (with_metadata(format="something-else"), "not a leditspp inversion"),
    "truncated": (lambda src, inv, dst: dst.write_bytes(src.read_bytes()[:-100]), "not a readable|damaged"),
    "not-safetensors": (lambda src, inv, dst: scene().save(dst, format="PNG"), "not a readable"),
}


@pytest.mark.parametrize("probe", PROBES, ids=list(PROBES))
def test_damaged_inversion_is_refused(probe, good, inversion, sd_folder, tmp_path, capsys):
    make, problem = PROBES[probe]
    bad = tmp_path / "bad.inv.safetensors"
    make(good, inversion, bad)
    with pytest.raises(LeditsError, match=problem) as caught:
        Inversion.load(bad)
    assert str(bad) in str(caught.value)

    out = tmp_path / "out.png"
    capsys.readouterr()
    code = main(["edit", "--inversion", str(bad), "-e", "+x", "--model", str(sd_folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("leditspp: error: ") and "Traceback" not in err
    assert not out.exists()


def test_round_trip_edits_like_the_original(good, inversion, editor):
    loaded = Inversion.load(good)
    for name in TENSORS:
        assert torch.equal(getattr(loaded, name), getattr(inversion, name)), name
    assert loaded.info == inversion.info
    assert stat.S_IMODE(os.stat(good).st_mode) == 0o666 & ~umask()
    assert [p.name for p in good.parent.iterdir()] == [good.name]  # no temp left behind
    fresh = editor.edit(inversion, "+x", decode=False).latents
    again = editor.edit(loaded, "+x", decode=False).latents
    assert torch.equal(fresh, again)


def test_a_file_stating_version_1_is_checked_like_any_other(good, inversion, tmp_path):
    """Stating format_version 1 (written without a hash) skipped the hash: a changed solver, or noise
    maps ×1e38 (an all-black image), loaded. Every file now needs its hash."""
    old = tmp_path / "v1.inv.safetensors"
    with_metadata(format_version="1", sha256=None)(good, inversion, old)
    with pytest.raises(LeditsError, match=r"no content hash \(format_version 1\)"):
        Inversion.load(old)


def flip_last_byte_of(name: str) -> Callable[[Path, Inversion, Path], None]:
    """XOR the lowest byte of the last element of tensor ``name`` (still a finite value)."""

    def probe(src: Path, inv: Inversion, dst: Path) -> None:
        header, data = split(src)
        end = header[name]["data_offsets"][1]
        width = 8 if header[name]["dtype"] in ("F64", "I64") else 4
        at = end - width  # the element's lowest (little-endian) byte
        dst.write_bytes(join(header, data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]))

    return probe


@pytest.mark.parametrize("name", TENSORS)
def test_a_changed_byte_in_any_stored_tensor_is_refused(name, good, tmp_path):
    """The content hash covers every tensor (a hash skipping one would accept a changed input latent)."""
    bad = tmp_path / f"{name}.inv.safetensors"
    flip_last_byte_of(name)(good, Inversion.load(good), bad)
    with pytest.raises(LeditsError, match="changed or corrupted"):
        Inversion.load(bad)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(InversionInfo)])
def test_an_edited_metadata_field_is_refused(field, good, inversion, tmp_path):
    """Every info field is under the hash: each is changed, keeping its type, and refused."""
    value = getattr(inversion.info, field)
    changed = value + "x" if isinstance(value, str) else value + 1
    bad = tmp_path / f"{field}.inv.safetensors"
    with_info(**{field: changed})(good, inversion, bad)
    with pytest.raises(LeditsError, match=r"changed or corrupted|metadata says|metadata is out of range"):
        Inversion.load(bad)
