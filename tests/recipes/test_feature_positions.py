"""recipes/codec/feature_positions.py: the share of semantic features that is token position."""

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.feature_positions import main
from recipes.data.world.family import SyntheticWorld


@pytest.fixture(scope="module")
def setup(tmp_path_factory, build_synthetic_corpus):
    root = tmp_path_factory.mktemp("feature-positions")
    manifest = build_synthetic_corpus(root / "corpus", SyntheticWorld(8, 3, 1.5, 2.0, ("tone", "noise")))
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100")).save_pretrained(root / "codec")
    return manifest, codec


def test_shares_of_an_untrained_audiomae_are_mostly_position(setup, capsys):
    manifest, codec = setup
    shares = main(["--manifest", str(manifest), "--codec", str(codec), "--split", "train", "--clips", "6",
                   "--seconds", "1.2"])
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["frequency"] + shares["time"] > 0.5  # random weights: the position embeddings dominate
    assert "| frequency position | time position | content |" in capsys.readouterr().out


def test_bad_arguments_get_clear_errors(setup, tmp_path):
    manifest, codec = setup
    with pytest.raises(SystemExit, match="fewer than 2 train clips of at least 9"):
        main(["--manifest", str(manifest), "--codec", str(codec), "--split", "train", "--seconds", "9"])
    with pytest.raises(SystemExit, match=r"--seconds must be in \(0, 10.24\]"):
        main(["--manifest", str(manifest), "--seconds", "12"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["--manifest", str(tmp_path / "none.jsonl")])
