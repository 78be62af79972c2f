"""Every default of the method, declared once (SPEC Part A; Part B §11 "Defaults side by side").

The API, the command line and the web UI read their defaults from here.
"""

from __future__ import annotations

from typing import Final

#: Model used when none is given: the built-in demo model shipped inside the package (issue 3).
MODEL: Final = "demo"

#: Inversion steps actually run, N (diffusers SD default; paper Table 1 uses 20).
STEPS: Final = 30
#: Fraction of the schedule skipped at the noisy end: M = floor(N·(1+skip)) leading-spaced
#: steps are built and the last N are kept (SPEC A2, B §3).
SKIP: Final = 0.15
#: Solver shared by inversion and editing: SDE-DPM-Solver++(2M) (paper Eq. 5).
SOLVER: Final = "dpmsolver++"
#: The solvers' names, as the CLI lists them without importing torch (:data:`leditspp.solvers.SOLVERS`
#: maps each to its step table, in this order).
SOLVERS: Final = ("dpmsolver++", "ddpm", "lcm")
#: Seed of the auxiliary noises of the inversion (API, CLI and web UI alike): the same image and
#: settings give the same inversion unless another seed or a generator is given.
SEED: Final = 0
#: Classifier-free guidance scale g_src of an optional source prompt during inversion (B §4.3).
SOURCE_GUIDANCE: Final = 3.5

#: Edit guidance scale s_e (paper Eq. 12).
EDIT_SCALE: Final = 5.0
#: Largest edit scale and source guidance accepted: 50× the paper's largest scales (5–20); beyond,
#: a guided estimate only saturates the image (black, or NaN where fp32 overflows).
MAX_GUIDANCE: Final = 1000.0
#: Mask threshold λ: the quantile of the map below which guidance is masked out (Eqs. 13–14).
EDIT_THRESHOLD: Final = 0.9
#: Steps at the start of the edit loop during which a concept is inactive.
WARMUP_STEPS: Final = 0
#: Step index from which a concept is inactive again (None: never).
COOLDOWN_STEPS: Final = None

#: Implicit mask: M¹ ⊙ M² at every step (paper Eq. 12; SPEC A3).
MASK_MODE: Final = "intersect"
#: The mask modes: both masks, the attention mask M¹ only, the noise mask M² only, or none.
MASK_MODES: Final = ("intersect", "attention", "noise", "none")
#: Attention mask level: downsamplings between the latent grid and the cross-attention maps M¹
#: reads (2: ¼ of the latents, the paper's; SPEC A3). A model folder's ``leditspp.json`` may
#: declare another level for its model.
MASK_LEVEL: Final = 2

#: Lin et al. (2023) rescale of the guided estimate; 0 disables it.
GUIDANCE_RESCALE: Final = 0.0

#: The evaluation suites by name (:data:`leditspp.evaluation.SUITES` maps each to its suite, in this order).
SUITES: Final = ("shapes", "tedbench", "piebench")

#: Largest image processed (height × width after any resizing): 2048² is 4.2 MP, already
#: 4× SDXL's native size; raise it with ``max_pixels=`` / ``--max-pixels``.
MAX_PIXELS: Final = 2048 * 2048
#: Largest image side given to a built-in demo model without a warning: they know 128-px scenes only.
DEMO_MAX_SIDE: Final = 512
#: Largest image file decoded at all (read from the header first): 8192² = 67 MP, above the photos
#: of nearly every camera, below Pillow's decompression-bomb warning (89 MP). Larger files are
#: refused before decoding, whatever --height/--width say.
MAX_DECODE_PIXELS: Final = 8192 * 8192

#: The network precisions a model may be loaded in (``dtype=`` of ModelOptions, ``--dtype``); none
#: given: fp16 on CUDA, fp32 on the CPU.
DTYPES: Final = ("float32", "float16", "bfloat16")

#: Fraction of the free device memory (host RAM on the CPU) that one batched network call — an
#: inversion chunk (issue 5; ``Editor.invert(inversion_batch=k)`` overrides) or an edit step's rows
#: (issue 25) — may fill with activations.
CALL_MEMORY_FRACTION: Final = 0.5
#: The memory plan (issue 25, :mod:`leditspp.offload`): ``auto`` picks the lightest plan whose
#: resident weights fit ``PLAN_WEIGHT_FRACTION`` of the device's free memory, leaving the rest to
#: activations (each call sizes itself to what is then free).
OFFLOAD: Final = "auto"
#: The memory plans (:mod:`leditspp.offload`), ``auto`` first then the concrete ones, lightest first.
OFFLOADS: Final = ("auto", "none", "model", "group")
PLAN_WEIGHT_FRACTION: Final = 0.8
#: Peak activation elements of one UNet row per latent cell per first-level channel, with fused
#: attention: measured 26–29 on SD-1.5-shaped UNets (CPU, fp32, 16² and 32² latents); 32 is the
#: estimate's margin.
ACTIVATION_ELEMENTS: Final = 32
#: On the CPU, rows per inversion call: batching gains nothing beyond (SD-1.5 shape, 32² latents,
#: 2 cores: 157 / 136 / 113 / 109 / 105 ms per row at 1 / 2 / 4 / 8 / 20 rows).
CPU_ROWS_PER_CALL: Final = 8
