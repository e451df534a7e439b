import pytest

from semanticodec_lm.training.config import (
    apply_overrides,
    flatten_overrides,
    load_recipe_config,
)


@pytest.mark.parametrize("text, value", [("6e-05", 6e-05), ("1e-4", 1e-4), ("2.5e-4", 2.5e-4), ("1E3", 1000.0),
                                         ("-3e2", -300.0), (".5", 0.5), ("10", 10), ("1_000", 1000),
                                         ("e5", "e5"), ("'1e-4'", "1e-4"), ("null", None)])
def test_overrides_read_exponent_floats_as_numbers(text, value):
    loaded = apply_overrides({}, [f"optim.lr={text}"])["optim"]["lr"]
    assert loaded == value and type(loaded) is type(value)


def test_flattened_floats_come_back_as_the_same_floats():
    values = {"optim": {"lr": 6e-05, "betas": [0.9, 0.95], "name": "adamw"}, "steps": 10}
    assert apply_overrides({}, flatten_overrides(values)) == values


def test_config_files_read_exponent_floats(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 3e-4\n")
    assert load_recipe_config(path, [], {"optim"})["optim"]["lr"] == pytest.approx(3e-4)
