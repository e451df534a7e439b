"""recipes/codec/stage_table.py: the vocoder and VAE stages side by side, with Griffin-Lim as a reference."""

import json

import torch

from codec.audio import write_audio
from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.stage_table import evenly_spaced_per_domain, main


def test_table_rows_columns_and_griffin_lim_keeps_the_tones(tmp_path, capsys):
    torch.manual_seed(0)
    SemantiCodec(get_config("tiny-100")).save_pretrained(tmp_path / "tiny")
    t = torch.arange(16000) / 16000
    rows = []
    for i, (domain, hz) in enumerate((("music", 330.0), ("speech", 180.0), ("music", 500.0))):
        write_audio(tmp_path / f"c{i}.wav", 0.3 * torch.sin(2 * torch.pi * hz * t), 16000)
        rows.append({"id": f"c{i}", "path": f"c{i}.wav", "split": "valid", "domain": domain})
    rows.append({"id": "t", "path": "c0.wav", "split": "train", "domain": "music"})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    table = main(["--manifest", str(tmp_path / "manifest.jsonl"), "--codec", f"tiny={tmp_path / 'tiny'}",
                  "--per-domain", "1"])
    assert list(table) == ["tiny: vocoder", "tiny: VAE + vocoder", "Griffin-Lim"]
    for values in table.values():
        assert set(values) == {"mel/music", "mel/speech", "stft/music", "stft/speech", "tones"}
        assert all(value >= 0 for value in values.values())
    assert table["Griffin-Lim"]["tones"] == 6  # a training-free inverse keeps pitch
    assert table["Griffin-Lim"]["mel/music"] < table["tiny: vocoder"]["mel/music"]  # an untrained vocoder does not
    out = capsys.readouterr().out
    assert "| stage | mel music | mel speech |" in out and "on 2 'valid' clips" in out


def test_evenly_spaced_per_domain_takes_at_most_n_of_each():
    class Clip:
        def __init__(self, domain, index):
            self.domain, self.index = domain, index

    clips = [Clip("a", i) for i in range(10)] + [Clip("b", i) for i in range(3)]
    chosen = evenly_spaced_per_domain(clips, 4)
    assert [(c.domain, c.index) for c in chosen] == [("a", 0), ("a", 2), ("a", 4), ("a", 6), ("b", 0), ("b", 1), ("b", 2)]
