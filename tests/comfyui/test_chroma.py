"""Chroma in the pack, on a tiny Chroma built in ComfyUI's own classes: exact reconstruction, prompts
of different token counts stacked by padding with a text mask (a padded row's estimate is its own),
M¹ from the double blocks' kernel calls with that mask, the concept's tokens in T5, and the same edit
as leditspp's own Chroma adapter on twin weights."""

from __future__ import annotations

import pytest
import torch

from .comfy_env import require_comfyui

ROOT = require_comfyui()

import comfy.supported_models  # noqa: E402
from leditspp_comfy import run, text  # noqa: E402
from leditspp_comfy.denoiser import comfy_adapter  # noqa: E402

from leditspp.editor import Editor  # noqa: E402
from leditspp.edits import Edit  # noqa: E402
from leditspp.errors import LeditsError  # noqa: E402
from leditspp.inversion import Inversion, invert_latents  # noqa: E402
from leditspp.models.autoencoder import ScaledVAE  # noqa: E402
from leditspp.models.base import Conditioning  # noqa: E402
from leditspp.models.capture import KernelTap, text_first  # noqa: E402
from leditspp.models.chroma import Chroma, ChromaText, ChromaTransformer  # noqa: E402
from leditspp.models.sd3 import joint_blocks  # noqa: E402
from leditspp.solvers import FlowPath, NoiseLevel, step_table  # noqa: E402

from . import tiny  # noqa: E402
from .test_pack import concept, edit, invert  # noqa: E402

SHORT, LONG = "a red hat", "a photo of a cat sitting on a wooden chair"


@pytest.fixture(scope="module")
def chroma():
    model, clip = tiny.tiny_chroma()
    return model, clip, tiny.tiny_vae(channels=16)


def level(rows: int) -> NoiseLevel:
    return NoiseLevel(torch.full((rows,), 500.0), torch.full((rows,), 0.5), torch.full((rows,), 0.5))


def latents(rows: int) -> torch.Tensor:
    return torch.randn(rows, 16, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_chroma_reconstructs_exactly_and_edits_with_its_joint_attention_mask(chroma, solver, steps):
    model, clip, vae = chroma
    image = tiny.image(seed=steps)
    inversion = invert(chroma, steps=steps, solver=solver, image=image, source_text=LONG if steps == 2 else "")
    assert torch.equal(edit(model, inversion)[0], vae.encode(image))
    latent, masks = edit(model, inversion, concept(clip, SHORT))
    assert not torch.equal(latent, vae.encode(image)) and masks.any()


def test_chroma_edits_where_its_concept_mask_is(chroma):
    """The edit moves the latents where the concept's mask acted (at some step) far more than
    where it never did."""
    model, clip, vae = chroma
    inversion = invert(chroma, steps=4)
    latent, masks = edit(model, inversion, concept(clip, SHORT, threshold=0.7, scale=8.0))
    change = (latent - vae.encode(tiny.image())).abs().mean(dim=1)[0]  # (8, 8) latent cells
    inside = torch.nn.functional.interpolate(masks[None], size=change.shape, mode="area")[0, 0] > 0
    assert inside.any() and not inside.all()
    assert change[inside].mean() > 3 * change[~inside].mean()


def test_chroma_runs_on_comfyuis_flux_shifted_flow_path(chroma):
    assert comfy_adapter(chroma[0]).path == FlowPath(dynamic=True, mu=1.15)


def test_a_padded_prompt_with_its_text_mask_keeps_its_own_estimate(chroma):
    """ComfyUI's Chroma text has no padding; stacked with a longer prompt, a prompt is padded and
    its pads masked, so its row's estimate is the unpadded one's (fp32 noise), while the same
    pads left unmasked change it."""
    model, clip, _ = chroma
    denoiser = comfy_adapter(model)
    short, long = text.encode(clip, SHORT), text.encode(clip, LONG)
    assert short.embeds.shape[1] < long.embeds.shape[1]
    padded = text.pad_to_common_length([short, long])
    assert padded[0].get("mask")[0].tolist() == [1.0] * short.embeds.shape[1] + [0.0] * (
        long.embeds.shape[1] - short.embeds.shape[1]
    )
    own = torch.cat([denoiser.estimate(latents(2)[i : i + 1], level(1), c) for i, c in enumerate((short, long))])
    stacked = denoiser.estimate(latents(2), level(2), Conditioning.cat(padded))
    torch.testing.assert_close(stacked, own, rtol=1e-5, atol=1e-6)
    unmasked = denoiser.estimate(latents(1), level(1), Conditioning.of(padded[0].embeds))
    assert (unmasked - own[:1]).abs().max() > 1e-3


def test_chroma_attention_mask_is_the_joint_softmax_over_each_rows_own_text(chroma):
    """M¹ is the image queries' softmax over [text; image] keys of the double block's kernel call
    (the single block's is left out), summed over the concept's T5 tokens: for a padded row, over
    its own text keys only (the pads masked as the kernel masks them)."""
    model, clip, _ = chroma
    seen = []

    def recording(func, q, k, v, heads, **kwargs):
        seen.append((q, k))
        return func(q, k, v, heads, **kwargs)

    model = model.clone()
    model.model_options["transformer_options"] = {"optimized_attention_override": recording}
    denoiser = comfy_adapter(model)
    conds = [text.encode(clip, SHORT), text.encode(clip, LONG)]
    cond = Conditioning.cat(text.pad_to_common_length(conds))
    positions = list(text.token_positions(clip, SHORT))
    tokens = cond.embeds.shape[1]
    weights = torch.zeros(2, tokens)
    weights[:, positions] = 1.0
    with denoiser.capture_attention() as recorder:
        recorder.arm(slice(0, None), weights)
        denoiser.estimate(latents(2), level(2), cond)
        got = recorder.take((4, 4))
    assert len(seen) == 2  # the double block's kernel call, then the single block's
    q, k = seen[0]
    maps = []
    for row, own in enumerate(c.embeds.shape[1] for c in conds):
        keys = torch.cat([k[row, :, :own], k[row, :, tokens:]], dim=1)
        probs = torch.softmax(q[row, :, tokens:] @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        maps.append(probs[..., positions].sum(-1).mean(0))
    expected = torch.stack(maps).view(2, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_chroma_concept_tokens_are_t5s(chroma):
    """A concept's tokens are its T5 word pieces (no start token); ComfyUI does not pad, and the
    pads a T5TokenizerOptions node asks for stay in the encoding and out of the concept's tokens."""
    _, clip, _ = chroma
    pieces = clip.tokenizer.clip_t5xxl.tokenizer(SHORT)["input_ids"][:-1]  # T5's own, without its end token
    assert text.token_positions(clip, SHORT) == tuple(range(len(pieces)))
    assert text.encode(clip, SHORT).embeds.shape[1] == len(pieces) + 1
    padded = clip.clone()
    padded.set_tokenizer_option("t5xxl_min_padding", 2)
    assert text.token_positions(padded, SHORT) == tuple(range(len(pieces)))
    assert text.encode(padded, SHORT).embeds.shape[1] == len(pieces) + 3


def test_an_unsupported_model_is_refused_with_chroma_among_the_supported():
    model, _ = tiny.tiny_chroma()
    model.model.model_config = comfy.supported_models.ChromaRadiance(dict(tiny.TINY_CHROMA))
    with pytest.raises(LeditsError, match=r"loaded as ChromaRadiance; supported: .*Chroma \(Chroma\)"):
        comfy_adapter(model)


#: ComfyUI reads Chroma's modulations at fixed offsets among 344 (full Chroma's 19 double and 38
#: single blocks), diffusers among its own count, 3·single + 12·double + 2: a twin needs both 344.
TWIN = {"depth": 28, "depth_single_blocks": 2, "mlp_ratio": 4.0}  # diffusers' Chroma fixes mlp ratio 4
SPLITS = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}
RENAMES = (
    (r"^txt_in\.", "context_embedder."),
    (r"^img_in\.", "x_embedder."),
    (r"^final_layer\.linear\.", "proj_out."),
    (r"\.in_layer\.", ".linear_1."),
    (r"\.out_layer\.", ".linear_2."),
    (r"(norms\.\d+)\.scale$", r"\1.weight"),
    (r"txt_attn\.norm\.query_norm\.scale$", "attn.norm_added_q.weight"),
    (r"txt_attn\.norm\.key_norm\.scale$", "attn.norm_added_k.weight"),
    (r"(img_attn\.)?norm\.query_norm\.scale$", "attn.norm_q.weight"),
    (r"(img_attn\.)?norm\.key_norm\.scale$", "attn.norm_k.weight"),
    (r"img_mlp\.0\.", "ff.net.0.proj."),
    (r"img_mlp\.2\.", "ff.net.2."),
    (r"txt_mlp\.0\.", "ff_context.net.0.proj."),
    (r"txt_mlp\.2\.", "ff_context.net.2."),
    (r"img_attn\.proj\.", "attn.to_out.0."),
    (r"txt_attn\.proj\.", "attn.to_add_out."),
    (r"linear2\.", "proj_out."),
    (r"^double_blocks\.", "transformer_blocks."),
    (r"^single_blocks\.", "single_transformer_blocks."),
)


def diffusers_weights(comfy_sd: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """ComfyUI's Chroma weights (the original layout) under diffusers' names, fused q/k/v split."""
    import re

    out = {}
    for key, value in comfy_sd.items():
        fused = re.match(r"^(double|single)_blocks\.(\d+)\.(img_attn\.qkv|txt_attn\.qkv|linear1)\.(weight|bias)$", key)
        if fused:
            kind, index, name, suffix = fused.groups()
            block = "transformer_blocks" if kind == "double" else "single_transformer_blocks"
            sizes = [width] * 3 + ([value.shape[0] - 3 * width] if name == "linear1" else [])
            for target, part in zip(SPLITS[name], value.split(sizes), strict=True):
                out[f"{block}.{index}.{target}.{suffix}"] = part
            continue
        for pattern, replacement in RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def diffusers_chroma(patcher):
    """diffusers' ``ChromaTransformer2DModel`` with the weights of the tiny ComfyUI Chroma."""
    from diffusers import ChromaTransformer2DModel

    config = patcher.model.model_config.unet_config
    network = ChromaTransformer2DModel(
        in_channels=64,
        num_layers=config["depth"],
        num_single_layers=config["depth_single_blocks"],
        attention_head_dim=config["hidden_size"] // config["num_heads"],
        num_attention_heads=config["num_heads"],
        joint_attention_dim=config["context_in_dim"],
        axes_dims_rope=tuple(config["axes_dim"]),
        approximator_num_channels=config["in_dim"],
        approximator_hidden_dim=config["hidden_dim"],
        approximator_layers=config["n_layers"],
    )
    weights = diffusers_weights(patcher.model.diffusion_model.state_dict(), config["hidden_size"])
    network.load_state_dict(weights, strict=True)
    return network.eval()


def hf_t5(clip):
    """transformers' ``T5EncoderModel`` and tokenizer with the tiny ComfyUI T5's weights and vocabulary."""
    import json

    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    folder = ROOT / "comfy" / "text_encoders"
    settings = {**json.loads((folder / "t5_config_xxl.json").read_text()), **tiny.TINY_T5, "num_decoder_layers": 0}
    encoder = T5EncoderModel(T5Config(**settings)).eval()
    missing = encoder.load_state_dict(clip.cond_stage_model.t5xxl.transformer.state_dict(), strict=False)
    assert missing.missing_keys == ["encoder.embed_tokens.weight"] and not missing.unexpected_keys  # tied to shared
    return encoder, T5TokenizerFast.from_pretrained(str(folder / "t5_tokenizer"))


def test_the_pack_and_leditspps_chroma_adapter_agree_on_twin_weights():
    """The same edit through the pack and through leditspp's own Chroma adapter on twin weights (a
    tiny ComfyUI Chroma, its diffusers conversion, ComfyUI's T5 in transformers) agrees to fp32
    noise. The prompts ("cat" as c_∅, "sunglasses") are 3 T5 tokens with the adapter's first pad,
    so its text mask is all ones and both run the same network on the same text."""
    model, clip = tiny.tiny_chroma(**TWIN)
    vae = tiny.tiny_vae(channels=16)
    encoder, tokenizer = hf_t5(clip)
    denoiser = comfy_adapter(model, vae=vae)
    transformer = diffusers_chroma(model)
    adapter = Chroma(
        text=ChromaText(tokenizer=tokenizer, text_encoder=encoder, max_sequence_length=3),
        denoiser=ChromaTransformer(
            transformer=transformer,
            path=FlowPath(dynamic=True, base_shift=1.15, max_shift=1.15),  # μ = 1.15 at every size, as ComfyUI's
            patch=2,
            text_tokens=3,
        ),
        autoencoder=ScaledVAE(None),
        attention=KernelTap(transformer, joint_blocks, text_first, 1),
    )
    ids = tokenizer("sunglasses").input_ids
    torch.testing.assert_close(encoder(torch.tensor([ids]))[0], text.encode(clip, "sunglasses").embeds)
    encoded = adapter.encode_prompts(["cat", "sunglasses"])  # each: its piece, </s> and the first pad
    assert encoded.get("mask").all() and len(ids) == 2
    embeds = encoded.embeds.float()

    image = tiny.image(seed=9)
    steps = {"steps": 3, "skip": 0.15, "seed": 0, "solver": "dpmsolver++", "source_guidance": 3.5}
    base = [Conditioning.of(embeds[:1])]
    inversion = run.invert(denoiser, image, base, **steps)
    edit = Edit("sunglasses", scale=6.0, threshold=0.5, conditioning=Conditioning.of(embeds[1:]))
    positions = tuple(text.token_positions(clip, "sunglasses"))
    assert list(positions) == adapter.token_positions("sunglasses")
    packed, _ = run.edit(
        denoiser, inversion, [run.Concept(edit, positions)], mask_mode="intersect", user_mask=None, preserve=None
    )

    editor = Editor(adapter)
    x0 = inversion.inversion.source_latents
    table = step_table("dpmsolver++", adapter.noise_path(8, 8), 3, 0.15)
    generator = torch.Generator().manual_seed(0)
    ys, denoised, zs = invert_latents(adapter, x0, table, [adapter.unconditional("cat", 1)], 3.5, generator, chunk=3)
    info = {**vars(inversion.inversion.info), "model": editor.fingerprint, "negative_prompt": "cat"}
    own = Inversion(ys, denoised, zs, table.timesteps, x0, inversion.inversion.info.__class__(**info))
    result = editor.edit(own, Edit("sunglasses", scale=6.0, threshold=0.5), decode=False)

    torch.testing.assert_close(inversion.inversion.denoised, denoised, rtol=1e-4, atol=1e-5)
    theirs = model.model.process_latent_out(result.latents)
    torch.testing.assert_close(packed, theirs, rtol=1e-3, atol=5e-4)  # fp32 noise through 3 guided steps
    assert (theirs - inversion.latent).abs().max() > 0.5, "the edit must be far larger than the tolerance"
