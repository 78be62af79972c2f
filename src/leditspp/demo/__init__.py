"""The demo world: the synthetic shapes scenes and the two tiny models trained on them.

``shapes.py`` renders the scenes, captions and masks; ``demo_model/`` (SD-shaped UNet, issue 3) and
``demo_flow_model/`` (SD3-shaped MMDiT, issue 23) are the shipped diffusers folders that
``Editor.from_pretrained("demo")`` and ``("demo-flow")`` load; ``examples/`` holds the web UI's
example image. ``training/train_demo.py`` and ``train_demo_flow.py`` rebuild the models.
"""

#: SD 1.x's training schedule: the UNet demo model was trained on it (its ``scheduler_config.json``),
#: and the tiny test models of :mod:`leditspp.testing` use it too.
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
