# Set-up and the two entry points of the README. Everything installs into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build by default; on a CUDA machine: make TORCH="torch" ...
TORCH  ?= torch==2.13.0
# the built-in demo model (offline); any hub id or diffusers folder works, e.g. MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5
MODEL  ?= demo
IMAGE  ?= examples/shapes.png
# the edit each demo model does right on the example (README, "The flow demo model"): the UNet
# demo replaces the blue square by a red circle; the flow demo recolours it (it cannot yet draw a
# new shape: on the UNet demo's edit it reddens the square)
ifeq ($(MODEL),demo-flow)
EDITS  ?= -e "+green square:3" -e "-blue square:3"
else
EDITS  ?= -e "+red circle:8" -e "-blue square:4"
endif
OUT    ?= edited.png

.PHONY: setup demo test lint

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	# the CLIP BPE vocabulary for the tests' offline tokenizer (the package itself is never imported)
	$(PY) -m pip install -q --no-deps "open-clip-torch==3.3.0"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/leditspp edit $(IMAGE) $(EDITS) --model $(MODEL) -o $(OUT)

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks training docs
	$(PY) -m ruff format --check src tests benchmarks training docs

test: $(VENV)/.installed lint
	$(PY) -m pytest -q -p no:cacheprovider
