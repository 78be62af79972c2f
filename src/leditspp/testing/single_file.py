"""Tiny single-file checkpoints: a diffusers SD 1.x pipeline's UNet, VAE and CLIP text encoder
written in the original (CompVis/LDM) key layout, as fine-tunes are shared — the inverse of what
diffusers' ``from_single_file`` converts, so that loading one back is a test of both."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

#: diffusers' resnet names → the original ones (UNet; the VAE's differ only in the shortcut).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def write_sd_single_file(pipe: Any, path: str | Path) -> Path:
    """Write ``pipe``'s (an SD 1.x pipeline) UNet, VAE and text encoder as one original-layout
    ``.safetensors`` file (``.ckpt``: a pickled ``{"state_dict": …}``) at ``path``."""
    from safetensors.torch import save_file

    state = {
        **{f"model.diffusion_model.{_unet_key(k, pipe.unet.config)}": v for k, v in pipe.unet.state_dict().items()},
        **{
            f"first_stage_model.{k2}": v2
            for k, v in pipe.vae.state_dict().items()
            for k2, v2 in [_vae_item(k, v, pipe.vae.config)]
        },
        **{f"cond_stage_model.transformer.{_clip_key(k)}": v for k, v in pipe.text_encoder.state_dict().items()},
    }
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    path = Path(path)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    return path


def _clip_key(key: str) -> str:
    """A CLIP text encoder weight's original name: under ``text_model.`` (as transformers 4 named it)."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def _unet_key(key: str, config: Any) -> str:
    """A UNet weight's original name (``layers_per_block`` resnets per down block, one more per up block)."""
    per_down = config.layers_per_block + 1
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    rules = [
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda i, j: f"input_blocks.{1 + i * per_down + j}.0."),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.", lambda i, j: f"input_blocks.{1 + i * per_down + j}.1."),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.", lambda i: f"input_blocks.{(i + 1) * per_down}.0.op."),
        (r"mid_block\.resnets\.(\d+)\.", lambda j: f"middle_block.{2 * j}."),
        (r"mid_block\.attentions\.0\.", lambda: "middle_block.1."),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda i, j: f"output_blocks.{i * per_down + j}.0."),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.", lambda i, j: f"output_blocks.{i * per_down + j}.1."),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda i: _upsampler(i, per_down, config)),
    ]
    for pattern, name in rules:
        if m := re.match(pattern, key):
            rest = key[m.end() :]
            if "resnets" in pattern:
                rest = re.sub(r"^(\w+)", lambda n: _UNET_RESNET.get(n.group(1), n.group(1)), rest)
            return name(*map(int, m.groups())) + rest
    raise ValueError(f"no original name for the UNet weight {key}")


def _upsampler(i: int, per_down: int, config: Any) -> str:
    """An up block's upsampler: after its resnets, and after their attentions where it has them."""
    has_attention = "CrossAttn" in config.up_block_types[i]
    return f"output_blocks.{i * per_down + per_down - 1}.{2 if has_attention else 1}."


def _vae_item(key: str, value: torch.Tensor, config: Any) -> tuple[str, torch.Tensor]:
    """A VAE weight's original name and value (the mid attention's projections as 1×1 convolutions)."""
    last = len(config.up_block_types) - 1
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{last - int(m[1])}.block.", key)
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{last - int(m[1])}.upsample.", key
    )
    key = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", key)
    key = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    if "mid_block.attentions.0." in key:
        key = key.replace("mid_block.attentions.0.", "mid.attn_1.")
        for new, old in _VAE_ATTENTION.items():
            key = key.replace(f"attn_1.{new}.", f"attn_1.{old}.")
        if value.ndim == 2:
            value = value[:, :, None, None]
    return key, value


#: Z-Image's original names → diffusers' (undone here: see diffusers' Z-Image conversion).
_ZIMAGE_RENAMES = {
    "all_final_layer.2-1.": "final_layer.",
    "all_x_embedder.2-1.": "x_embedder.",
    ".attention.to_out.0.": ".attention.out.",
    ".attention.norm_k.": ".attention.k_norm.",
    ".attention.norm_q.": ".attention.q_norm.",
}


def write_zimage_single_file(transformer: Any, path: str | Path) -> Path:
    """Write a Z-Image transformer alone as one original-layout ``.safetensors`` file: the
    attention's q, k and v fused into ``qkv``, the other names as the original model has them."""
    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    for key, value in transformer.state_dict().items():
        for new, old in _ZIMAGE_RENAMES.items():
            key = key.replace(new, old)
        state[f"model.diffusion_model.{key}"] = value
    for key in [k for k in state if k.endswith(".attention.to_q.weight")]:
        parts = [state.pop(key.replace("to_q", name)) for name in ("to_q", "to_k", "to_v")]
        state[key.replace("to_q", "qkv")] = torch.cat(parts)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))
    return Path(path)
