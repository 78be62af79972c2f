"""The demo world: the synthetic shapes scenes and the two tiny models trained on them.

``shapes.py`` renders the scenes, captions and masks; ``demo_model/`` (SD-shaped UNet) and
``demo_flow_model/`` (SD3-shaped MMDiT) are the shipped diffusers folders that
``Editor.from_pretrained("demo")`` and ``("demo-flow")`` load; ``examples/`` holds the web UI's
example image. ``training/train_demo.py`` and ``train_demo_flow.py`` rebuild the models.
"""

#: The edit each built-in model does right on the bundled example ``examples/shapes.png`` (what
#: ``make demo`` runs, and what the web UI's example fills in): the UNet demo replaces the blue
#: square by a red circle; the flow demo recolours it (it cannot yet draw a new shape).
EXAMPLE_EDITS = {"demo": ("+red circle:8", "-blue square:4"), "demo-flow": ("+green square:3", "-blue square:3")}

#: SD 1.x's training schedule: the UNet demo model was trained on it (its ``scheduler_config.json``),
#: and the tiny test models of :mod:`leditspp.testing` use it too.
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
