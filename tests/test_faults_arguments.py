"""The Python entry points check their arguments' types: a text where a list belongs, an unknown
dtype, a text where a flag belongs are refused naming the argument and what it takes — not read
character by character, crashed on, or taken as true."""

from __future__ import annotations

import pytest

from leditspp import LeditsError
from leditspp.batch import BatchEdit
from leditspp.evaluation import evaluate
from leditspp.model_options import ModelOptions
from leditspp.offload import MemoryPlan


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"edits": "hat"}, r"BatchEdit: edits must be a list or tuple of texts .* got 'hat' \(str\)"),
        ({"images": "a.png"}, r"BatchEdit: images must be a list or tuple of texts"),
        ({"options": {"dtype": "float16"}}, r"BatchEdit: options must be a ModelOptions"),
        ({"masks": "no"}, r"BatchEdit: masks must be True or False; got 'no'"),
        ({"scale": "7"}, r"BatchEdit: scale must be None or a number; got '7'"),
        ({"warmup": 1.5}, r"BatchEdit: warmup must be an integer; got 1\.5"),
        ({"settings": [("steps", 2)]}, r"BatchEdit: settings must be a mapping"),
    ],
)
def test_batch_edit_refuses_arguments_of_the_wrong_type(arguments, expected):
    with pytest.raises(LeditsError, match=expected):
        BatchEdit(**{"images": ("a.png",), "output": "out.png", "edits": ("+hat",), **arguments})


@pytest.mark.parametrize("field", ["fp8", "vae_tiling", "vae_slicing"])
def test_a_memory_plan_takes_only_booleans_for_its_switches(field):
    with pytest.raises(LeditsError, match=rf"MemoryPlan: {field} must be True or False; got 'no'"):
        MemoryPlan(**{field: "no"})
    assert MemoryPlan(**{field: True}) != MemoryPlan()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"dtype": "float8"}, r"dtype must be None \(the model's\) or one of float32, float16, bfloat16; got 'float8'"),
        ({"compile": 1}, r"ModelOptions: compile must be True or False"),
        ({"offload": "cpu"}, r"offload must be one of auto, none, model, group; got 'cpu'"),
        ({"loras": "style.safetensors"}, r"ModelOptions: loras must be a list or tuple of texts"),
    ],
)
def test_model_options_refuse_arguments_of_the_wrong_kind_before_loading(arguments, expected):
    with pytest.raises(LeditsError, match=expected):
        ModelOptions(**arguments)


def test_model_options_are_given_by_name_only():
    with pytest.raises(TypeError):
        ModelOptions("cpu")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"sweep": "scale=4,8"}, "evaluate: sweep must be a mapping"),
        ({"limit": "2"}, r"evaluate: limit must be None or an integer; got '2'"),
        ({"resume": "yes"}, "evaluate: resume must be True or False"),
        ({"model": ["demo"]}, "evaluate: model must be None or a text"),
        ({"settings": [1]}, "settings a mapping or None"),
    ],
)
def test_evaluate_refuses_arguments_of_the_wrong_type(tmp_path, arguments, expected):
    with pytest.raises(LeditsError, match=expected):
        evaluate("shapes", None, tmp_path, **arguments)
