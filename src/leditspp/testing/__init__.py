"""Tiny, offline components for tests, benchmarks and examples; nothing here downloads.

* :mod:`.tokenizers`: the real CLIP BPE tokenizer and a small T5-style one, built offline;
* :mod:`.tiny`: random-weight SD 1.x/2.x, SDXL, SD3/3.5 and FLUX.1 components and pipelines,
  few-step schedulers; :mod:`.tiny2026`: FLUX.2 [klein], Z-Image, Qwen-Image and Chroma;
* :mod:`.port`: the harness that runs diffusers' LEdits++ port beside leditspp;
* :mod:`.tolerance`: how far fp32 rounding lets two runs land.

Every builder seeds inside ``torch.random.fork_rng``: the caller's global RNG is left as it was.
"""

from .port import (
    diffusers_port,
    diffusers_port_xl,
    exact_port_scheduler,
    keep_attention_processors,
    port_edit_arguments,
)
from .tiny import (
    FEW_STEP_SCHEDULERS,
    FLUX_SCHEDULE,
    FLUX_VAE_FACTORS,
    SD3_SCHEDULE,
    SD3_VAE_FACTORS,
    clip_text_encoder,
    few_step_scheduler,
    t5_text_encoder,
    tiny_flow_vae,
    tiny_flux_components,
    tiny_flux_pipeline,
    tiny_sd3_components,
    tiny_sd3_pipeline,
    tiny_sd_components,
    tiny_sd_pipeline,
    tiny_sdxl_components,
    tiny_sdxl_pipeline,
    tiny_vae,
)
from .tokenizers import (
    T5_ALPHABET,
    T5_COLOURS,
    T5_CORPUS,
    T5_SHAPES,
    clip_bpe_path,
    clip_tokenizer,
    t5_backend_tokenizer,
    t5_corpus,
    t5_tokenizer,
    t5_unigram_pieces,
    write_clip_tokenizer_files,
)
from .tolerance import FP32_REPLAY_RTOL, replay_tolerance

__all__ = [
    "FEW_STEP_SCHEDULERS",
    "FLUX_SCHEDULE",
    "FLUX_VAE_FACTORS",
    "FP32_REPLAY_RTOL",
    "SD3_SCHEDULE",
    "SD3_VAE_FACTORS",
    "T5_ALPHABET",
    "T5_COLOURS",
    "T5_CORPUS",
    "T5_SHAPES",
    "clip_bpe_path",
    "clip_text_encoder",
    "clip_tokenizer",
    "diffusers_port",
    "diffusers_port_xl",
    "exact_port_scheduler",
    "few_step_scheduler",
    "keep_attention_processors",
    "port_edit_arguments",
    "replay_tolerance",
    "t5_backend_tokenizer",
    "t5_corpus",
    "t5_text_encoder",
    "t5_tokenizer",
    "t5_unigram_pieces",
    "tiny_flow_vae",
    "tiny_flux_components",
    "tiny_flux_pipeline",
    "tiny_sd3_components",
    "tiny_sd3_pipeline",
    "tiny_sd_components",
    "tiny_sd_pipeline",
    "tiny_sdxl_components",
    "tiny_sdxl_pipeline",
    "tiny_vae",
    "write_clip_tokenizer_files",
]
