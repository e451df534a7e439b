"""Numeric and seed arguments are refused at the API's edge with a message naming them."""

import numpy as np
import pytest
import torch

from codec.arguments import check_float, check_int, check_seeds
from codec.config import get_config
from codec.model import SemantiCodec


def test_checks_accept_plain_and_numpy_numbers_and_refuse_the_rest():
    assert check_int("steps", np.int64(5), 1) == 5 and check_float("eta", np.float32(0.5), 0.0, 1.0) == 0.5
    assert check_seeds(np.array([1, 2]), 2) == [1, 2] and check_seeds(3, 2) == [3, 3] and check_seeds(None, 2) is None
    for bad, match in ((True, "integer"), (2.5, "integer"), ("3", "integer"), (0, ">= 1")):
        with pytest.raises(ValueError, match=f"steps must be .*{match}"):
            check_int("steps", bad, 1)
    for bad in (float("nan"), float("inf"), -0.1, 1.5, "0.5", None):
        with pytest.raises(ValueError, match="eta must be"):
            check_float("eta", bad, 0.0, 1.0)
    for bad in ("7", 1.5, -1, 2**63, [1, "x"]):
        with pytest.raises(ValueError, match="seed"):
            check_seeds(bad, 2 if isinstance(bad, list) else 1)
    with pytest.raises(ValueError, match="got 3 seeds for 2 items"):
        check_seeds([1, 2, 3], 2)


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return SemantiCodec(get_config("tiny-100")).eval()


@pytest.mark.parametrize("setting, match", [
    ({"cfg_scale": float("nan")}, "cfg_scale must be a finite number"),
    ({"eta": float("nan")}, "eta must be a finite number >= 0 and <= 1"),
    ({"eta": 2.0}, "eta must be"),
    ({"steps": 0}, "steps must be >= 1 and <= 1000"),
    ({"steps": 5000}, "steps must be"),
    ({"batch_size": -1}, "batch_size must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"sampler": "euler"}, "sampler must be one of ddim, dpmpp2m, prior"),
    ({"sampler": "prior"}, "'prior' needs a UNet with a latent prior"),  # tiny UNets have none
    ({"seed": "7"}, "seed must be"),
    ({"seed": 1.5}, "seed must be None, an integer"),
])
def test_decode_refuses_bad_settings_before_any_work(codec, setting, match):
    tokens = torch.zeros(1, 10, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        codec.decode(tokens, **setting)
    with pytest.raises(ValueError, match=match):
        next(codec.iter_decode(tokens, **setting))


def test_encode_refuses_a_batch_size_below_one(codec):
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size must be"):
            codec.encode(torch.zeros(1, 16000), 16000, batch_size=bad)


def test_cli_refuses_nan_guidance_in_one_line_and_writes_nothing(codec, tmp_path, capsys):
    from semanticodec_lm.cli import main
    from codec.tokenfile import save_tokens

    folder = tmp_path / "model"
    codec.save_pretrained(folder)
    tokens = tmp_path / "t.tokens.safetensors"
    save_tokens(tokens, torch.zeros(1, 10, 2, dtype=torch.long), None, codec.config)
    for flag, value in (("--cfg-scale", "nan"), ("--eta", "nan"), ("--batch-size", "-1"), ("--steps", "0"),
                        ("--sampler", "prior")):  # tiny-100 has no latent prior
        out = tmp_path / f"out{flag}"
        status = main(["decode", str(tokens), "-o", str(out), "--model", str(folder), flag, value])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert flag.lstrip("-").replace("-", "_") in err
        assert not out.exists() or not any(out.rglob("*"))
    status = main(["encode", str(tokens), "-o", str(tmp_path / "enc"), "--model", str(folder), "--files-per-batch", "0"])
    assert status == 2 and "files_per_batch must be >= 1" in capsys.readouterr().err
