# Set-up and the two entry points of the README. Everything installs into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build by default; on a CUDA machine: make TORCH="torch" ...
TORCH  ?= torch==2.13.0
# the built-in demo model (offline); any hub id or diffusers folder works, e.g. MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5
MODEL  ?= demo
IMAGE  ?= examples/shapes.png
# the edit each demo model does right on the example (docs/models/demo.md): the UNet
# demo replaces the blue square by a red circle; the flow demo recolours it (it cannot yet draw a
# new shape: on the UNet demo's edit it reddens the square)
ifeq ($(MODEL),demo-flow)
EDITS  ?= -e "+green square:3" -e "-blue square:3"
else
EDITS  ?= -e "+red circle:8" -e "-blue square:4"
endif
OUT    ?= edited.png

.PHONY: setup demo test lint docs

# Two set-ups, each with its stamp: the demo needs only PyTorch and leditspp; the tests add their
# extras (pytest, ruff, gradio, playwright, peft, ray) and the docs tools.
$(VENV)/.installed-demo: pyproject.toml Makefile
	python3 -m venv $(VENV)
	@echo "installing pip, $(TORCH) and leditspp into $(VENV) (a few minutes the first time) ..."
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.installed-demo
	@echo "installing the test and docs extras into $(VENV) ..."
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed-demo
	$(VENV)/bin/leditspp edit $(IMAGE) $(EDITS) --model $(MODEL) -o $(OUT)

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks training docs comfyui
	$(PY) -m ruff format --check src tests benchmarks training docs comfyui

# the documentation site; --strict: a broken link, anchor or API reference fails the build
# (not --quiet: it drops the warnings before strict mode counts them, and the build passes)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# then the ComfyUI node pack's tests, against ComfyUI in its own environment (comfyui/dev/test.sh)
test: $(VENV)/.installed lint docs
	$(PY) -m pytest -q -p no:cacheprovider
	comfyui/dev/test.sh
