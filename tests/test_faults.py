"""The fault catalogue (issue 11): every bad input a user has tried, and what it must get.

CLI probes: exit 2, one line on stderr, no traceback, no output file — and, where the input can be
checked without the model, before the model loads (``Editor.from_pretrained`` is made to fail
for those). The next bad input is one more line in ``CLI_PROBES``. Inversion files have their
own catalogue in ``test_inversion_files.py``, the web UI's uploads in ``test_webui.py``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp import Edit, Editor, LeditsError, defaults
from leditspp.cli import main
from leditspp.io import as_pixel_batch, open_image
from leditspp.models.unet_attention import mask_attention_layers

from .conftest import scene


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width × height`` with (almost) no pixel data: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def probe(name: str, args: list[str], message: str, early: bool = True, cpu_only: bool = False) -> object:
    """One bad CLI input: its arguments, a fragment of the expected message, and whether it must
    be refused before the model loads."""
    marks = pytest.mark.skipif(cpu_only and torch.cuda.is_available(), reason="a CUDA device is present")
    return pytest.param(args, message, early, id=name, marks=marks)


# {photo}: a 64×96 PNG; {out}: the output path; {dir}: a scratch folder; {inv}, {png}: file names there.
CLI_PROBES = [
    probe("missing image", ["edit", "{dir}/missing.png", "-e", "+hat"], "does not exist"),
    probe("text as png", ["edit", "{dir}/notes.png", "-e", "+hat"], "cannot read"),
    probe("empty file", ["edit", "{dir}/empty.png", "-e", "+hat"], "cannot read"),
    probe("animated gif", ["edit", "{dir}/anim.gif", "-e", "+hat"], "animated"),
    probe("20000² bomb", ["edit", "{dir}/bomb.png", "-e", "+hat"], "over the limit"),
    probe("3000² image", ["edit", "{dir}/big.png", "-e", "+hat"], "--max-pixels"),
    probe("1×1 image", ["edit", "{dir}/dot.png", "-e", "+hat"], "at least"),
    probe("output under a file", ["edit", "{photo}", "-e", "+hat", "-o", "{photo}/out.png"], "is a file"),
    probe("output in /proc", ["edit", "{photo}", "-e", "+hat", "-o", "/proc/x.png"], "cannot write"),
    probe("output is a folder", ["edit", "{photo}", "-e", "+hat", "-o", "{dir}/sub.png"], "is a folder"),
    probe("bad yaml recipe", ["edit", "{photo}", "--recipe", "{dir}/bad.yaml"], "not valid YAML at line"),
    probe("huge seed", ["edit", "{photo}", "-e", "+hat", "--seed", str(2**70)], "seed must be"),
    probe("negative seed", ["edit", "{photo}", "-e", "+hat", "--seed", "-1"], "seed must be"),
    probe("recipe seed text", ["edit", "{photo}", "--recipe", "{dir}/seed_text.json"], "seed must be"),
    probe("recipe seed float", ["edit", "{photo}", "--recipe", "{dir}/seed_float.json"], "seed must be"),
    probe("recipe steps text", ["edit", "{photo}", "--recipe", "{dir}/steps_text.json"], "steps must be"),
    probe("per-image model", ["edit", "{photo}", "--recipe", "{dir}/per_image_model.json"], "only the top level"),
    probe("unknown device", ["edit", "{photo}", "-e", "+hat", "--device", "foo"], "unknown device"),
    probe("cuda on a cpu build", ["edit", "{photo}", "-e", "+hat", "--device", "cuda"], "not available", cpu_only=True),
    probe("missing user mask", ["edit", "{photo}", "-e", "+hat", "--user-mask", "{dir}/nomask.png"], "does not exist"),
    probe("inversion and --steps", ["edit", "--inversion", "{inv}", "-e", "+a", "--steps", "5"], "--steps"),
    probe("inversion and --seed", ["edit", "--inversion", "{inv}", "-e", "+a", "--seed", "3"], "--seed"),
    probe("save inversion as png", ["edit", "{photo}", "-e", "+hat", "--save-inversion", "{png}"], ".safetensors"),
    probe("scale not a number", ["edit", "{photo}", "-e", "+cat:abc"], "must be a number"),
    probe("threshold not a number", ["edit", "{photo}", "-e", "+cat@x"], "must be a number"),
    probe("threshold 1", ["edit", "{photo}", "-e", "+cat@1"], "every pixel"),
    probe("threshold as percent", ["edit", "{photo}", "-e", "+hat@90"], "did you mean 0.9"),
    probe("skip 1", ["edit", "{photo}", "-e", "+hat", "--skip", "1"], "whole schedule"),
    probe("warm-up past the end", ["edit", "{photo}", "-e", "+hat", "--warmup", "9", "--steps", "3"], "never act"),
    probe("negative scale", ["edit", "{photo}", "-e", "+hat:-3"], "remove"),
]


def _make_files(folder: Path) -> None:
    (folder / "notes.png").write_text("this is not an image")
    (folder / "empty.png").write_bytes(b"")
    animated_gif(folder / "anim.gif")
    png_header_only(folder / "bomb.png", 20000, 20000)
    Image.new("RGB", (3000, 3000), "white").save(folder / "big.png")
    Image.new("RGB", (1, 1), "white").save(folder / "dot.png")
    (folder / "sub.png").mkdir()
    (folder / "bad.yaml").write_text("edits: [+hat\nsteps: 3\n")
    (folder / "seed_text.json").write_text(json.dumps({"seed": "abc", "edits": ["+hat"]}))
    (folder / "seed_float.json").write_text(json.dumps({"seed": 1.7, "edits": ["+hat"]}))
    (folder / "steps_text.json").write_text(json.dumps({"steps": "abc", "edits": ["+hat"]}))
    recipe = {"edits": ["+hat"], "images": {"photo.png": {"model": "other"}}}
    (folder / "per_image_model.json").write_text(json.dumps(recipe))


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    _make_files(folder)
    scene(64, 96, seed=5).save(folder / "photo.png")
    return folder


@pytest.mark.parametrize(("args", "message", "early"), CLI_PROBES)
def test_cli_probe(sd_folder, probe_dir, tmp_path, capsys, monkeypatch, args, message, early):
    if early:
        monkeypatch.setattr(Editor, "from_pretrained", _must_not_load)
    out = tmp_path / "out.png"
    names = {"photo": probe_dir / "photo.png", "inv": probe_dir / "x.safetensors", "png": probe_dir / "x.png"}
    args = [a.format(dir=probe_dir, out=out, **names) for a in args]
    if "-o" not in args:
        args += ["-o", str(out)]
    code = main([*args, "--model", str(sd_folder), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("leditspp: error:") and message in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()


def _must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


def test_serve_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve"]) == 2
    assert "pip install 'leditspp[web]'" in capsys.readouterr().err


def test_quiet_prints_nothing_but_the_result(sd_folder, probe_dir, tmp_path):
    out = tmp_path / "q.png"
    cmd = [sys.executable, "-m", "leditspp.cli", "edit", str(probe_dir / "photo.png"), "-e", "+a hat"]
    cmd += ["--model", str(sd_folder), "--steps", "2", "--quiet", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.strip() == f"wrote {out}"


# --- API probes: LeditsError naming the value and the fix -------------------------------------


@pytest.fixture(scope="module")
def small_inversion(editor):
    return editor.invert(scene(64, 64, seed=2), steps=3, seed=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ed, inv: ed.invert(scene(64, 64), steps=3, inversion_batch=0), "inversion_batch"),
        (lambda ed, inv: ed.invert(scene(64, 64), steps=3, inversion_batch=1.5), "inversion_batch"),
        (lambda ed, inv: ed.invert(scene(64, 64), steps=3, seed=2**70), r"seed must be an integer in \[0, 2\*\*64\)"),
        (lambda ed, inv: ed.invert(scene(64, 64), steps=3, seed="abc"), "seed must be"),
        (lambda ed, inv: ed.invert(scene(64, 64), steps=3, max_pixels=1000), "max_pixels="),
        (lambda ed, inv: ed.edit(inv, Edit("hat", warmup_steps=3)), "never act"),
        (lambda ed, inv: Editor.from_pretrained("demo", device="foo"), "unknown device"),
        pytest.param(
            lambda ed, inv: Editor.from_pretrained("demo", device="cuda:0"),
            "not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present"),
        ),
        (lambda ed, inv: Edit.parse("+cat:abc"), "must be a number"),
        (lambda ed, inv: Edit.parse("-cat@0.8x"), "must be a number"),
        (lambda ed, inv: Edit("cat", threshold=1.0), "every pixel"),
    ],
    ids=[
        "inversion_batch 0",
        "inversion_batch 1.5",
        "seed 2**70",
        "seed text",
        "max_pixels",
        "warm-up past the end",
        "device foo",
        "cuda on cpu",
        "scale text",
        "threshold text",
        "threshold 1",
    ],
)
def test_api_probe(editor, small_inversion, call, message):
    with pytest.raises(LeditsError, match=message):
        call(editor, small_inversion)


def test_a_colon_followed_by_a_space_stays_part_of_the_prompt():
    assert Edit.parse("+style: watercolour:6").prompt == "style: watercolour"


def test_long_prompts_are_cut_with_a_warning(editor, small_inversion, caplog):
    long = "a red hat with " + "very " * 90 + "big feathers"
    with caplog.at_level("WARNING", logger="leditspp"):
        editor.edit(small_inversion, Edit(long, scale=1.0), decode=False)
    assert "tokens as the text encoder reads it; it reads only the first 77" in caplog.text


# --- images that used to be read wrong ------------------------------------------------------


GRAY = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.fromarray(GRAY.astype(np.uint16) * 257), GRAY),  # 16-bit grayscale (I;16)
        (lambda: Image.fromarray(GRAY.astype(np.int32) * 257).convert("I"), GRAY),  # 32-bit int, 16-bit range
        (lambda: Image.fromarray(GRAY.astype(np.float32) / 255), GRAY),  # float in [0, 1]
        (lambda: Image.fromarray(GRAY).convert("LA"), GRAY),  # gray + opaque alpha
        (lambda: Image.fromarray(GRAY).convert("CMYK"), GRAY),
    ],
    ids=["I;16", "I", "F", "LA", "CMYK"],
)
def test_high_bit_depth_and_other_modes_read_as_their_8_bit_values(tmp_path, make, expected):
    image = make()
    path = tmp_path / ("x.tiff" if image.mode in ("F", "CMYK") else "x.png")
    image.save(path)
    got = np.asarray(open_image(path))
    assert got.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - expected[..., None]).max() <= 1
    api = (as_pixel_batch(str(path))[0] * 255).round().numpy().transpose(1, 2, 0)
    assert np.abs(api - expected[..., None]).max() <= 1


def test_transparent_palette_pixels_become_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(open_image(tmp_path / "p.png"))
    assert tuple(got[0, 0]) == (255, 0, 0) and tuple(got[4, 4]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with "rotate 90° CW" in EXIF is read upright (portrait)."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(open_image(tmp_path / "phone.jpg"))
    assert upright.shape == (64, 32, 3)
    assert upright[:16, :, 0].mean() > 200 and upright[48:, :, 0].mean() < 60  # red now on top


def test_the_pixel_limits_are_declared_once():
    assert defaults.MAX_PIXELS < defaults.MAX_DECODE_PIXELS


# --- concurrency ----------------------------------------------------------------------------


def test_two_threads_editing_on_one_editor_match_the_serial_results(editor):
    """Issue 11.1: concurrent edits with the attention mask each get their own capture, results
    equal the serial ones, and the UNet's processors are restored afterwards."""
    layers = mask_attention_layers(editor.model.denoiser.unet)
    before = [layer.processor for layer in layers]
    invs = [editor.invert(scene(64, 64, seed=s), steps=6, seed=s) for s in (7, 8)]
    edits = [[Edit("a red hat", scale=6.0), Edit("a cat", remove=True)], [Edit("snow", scale=5.0, threshold=0.7)]]
    serial = [editor.edit(inv, e, decode=False) for inv, e in zip(invs, edits, strict=True)]
    results: list = [None, None]
    errors: list = []
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                results[i] = editor.edit(invs[i], edits[i], decode=False)
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, serial, strict=True):
        assert torch.equal(got.masks, want.masks)
        assert torch.allclose(got.latents, want.latents, atol=1e-5)
    assert [layer.processor for layer in layers] == before


def test_tokenizing_from_two_threads_keeps_each_calls_padding(editor):
    """Hugging Face tokenizers hold padding/truncation on the shared backend during a call: two
    threads tokenizing at once got each other's (a 77-token caption came back with 5 tokens, 7 in
    3,000 calls here); every family tokenizes through one lock."""
    from leditspp.models.base import tokenize
    from leditspp.models.text import warn_if_truncated

    tokenizer, lengths = editor.model.text.tokenizer, []
    barrier = threading.Barrier(2)

    def padded() -> None:
        barrier.wait()
        for _ in range(1500):
            ids = tokenize(tokenizer, ["a red hat"], padding="max_length", max_length=77, truncation=True).input_ids
            lengths.append(len(ids[0]))

    def unpadded() -> None:
        barrier.wait()
        for _ in range(1500):
            warn_if_truncated(tokenizer, ["a cat on a mat"])

    threads = [threading.Thread(target=padded), threading.Thread(target=unpadded)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(lengths) == {77}
