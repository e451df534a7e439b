"""recipes/codec/plot_curves.py: curves read from Lightning csv logs (resumed runs included) and drawn."""

import pytest

from recipes.codec.plot_curves import main, read_curves


def _log(run, version: int, text: str) -> None:
    folder = run / "logs" / f"version_{version}"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(text)


def test_curves_join_resumed_logs_and_plot(tmp_path):
    run = tmp_path / "vocoder"
    _log(run, 0, "epoch,step,train/loss,valid/loss\n0,10,2.0,\n0,19,,1.5\n")
    _log(run, 1, "epoch,step,train/loss,valid/loss\n0,19,1.8,\n0,29,1.2,\n0,39,,1.0\n")
    curves = read_curves(run)
    assert curves["valid/loss"] == [(19, 1.5), (39, 1.0)]
    assert curves["train/loss"] == [(10, 2.0), (19, 1.8), (29, 1.2)]
    out = main([str(run), str(run), "-o", str(tmp_path / "curves.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no logs"):
        read_curves(tmp_path / "empty")
