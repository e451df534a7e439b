"""The probing recipe: one table over codecs of two token rates, resumable per codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.data.build import build_corpus
from recipes.data.clips import ClipSettings
from recipes.data.install import run_command
from recipes.data.world.family import SyntheticWorld
from recipes.probe import run as probe_recipe

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "probe" / "configs" / "tiny.yaml"


def _no_apt(command):  # never install anything: dpkg answers "not installed"
    if command[0] == "dpkg-query":
        return run_command(["false"])
    raise AssertionError(f"unexpected command {command}")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    build_corpus(root / "world", [SyntheticWorld(24, 4, 1.0, 1.2, ("tone", "noise", "drums", "sweep"))],
                 ClipSettings(1.0, 10.0), workers=1, install=False, runner=_no_apt, log=lambda message: None)
    for rate in (100, 25):
        SemantiCodec(get_config(f"tiny-{rate}")).save_pretrained(root / f"codec-{rate}")
    return root


def test_one_table_for_every_codec_and_a_rerun_reuses_the_results(world, monkeypatch):
    argv = ["--config", str(TINY), f"manifest={world / 'world' / 'manifest.jsonl'}", f"out={world / 'probe'}",
            f"codecs={{t100: {world / 'codec-100'}, t25: {world / 'codec-25'}}}", "logger=none", "report_split=valid",
            "eval_splits=[valid]", "kmeans_frames=1000"]
    combined = probe_recipe.main(argv)
    assert set(combined["reports"]) == {"t100", "t25"}
    assert combined["reports"]["t25"]["codec"] == "tiny-25"
    table = (world / "probe" / "probe.md").read_text()
    assert "t100 (tiny-100) linear / MLP" in table and "t25 (tiny-25) linear / MLP" in table
    for task in ("domain", "class"):
        for features in ("semantic", "acoustic", "both", "mel-kmeans"):
            assert any(line.startswith(f"| {task} (") and f"| {features} |" in line for line in table.splitlines())
    result = combined["reports"]["t100"]["results"][0]
    assert 0.0 <= result["linear_accuracy"] <= 1.0 and result["split"] == "valid"

    def must_not_run(args):
        raise AssertionError("a finished codec was probed again")

    monkeypatch.setattr(probe_recipe, "run_probe", must_not_run)
    again = probe_recipe.main(argv)
    assert json.dumps(again["reports"], sort_keys=True) == json.dumps(combined["reports"], sort_keys=True)
    with pytest.raises(SystemExit, match="at least one entry under 'codecs'"):
        probe_recipe.main([*argv, "codecs={}"])
