"""``python -m recipes.data.eval_subset``: writes a subset manifest whose paths still find the audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from codec.manifest import write_manifest
from recipes.data.eval_subset import main
from semanticodec_lm.corpus.manifest import read_manifest


def make_corpus(folder) -> list[dict]:
    rows = []
    for index, domain in enumerate(["speech", "music", "sfx"] * 4):
        path = f"audio/test/{domain}/{index}.flac"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / path, np.zeros(16000 * 3, dtype=np.float32), 16000)
        rows.append({"id": f"{domain}-{index}", "path": path, "domain": domain, "split": "test", "duration": 3.0,
                     "language": "en" if domain == "speech" else None, "transcript": "yes" if index < 6 else None})
    write_manifest(folder / "manifest.jsonl", rows)
    return rows


def test_writes_the_subset_with_rebased_paths(tmp_path, capsys) -> None:
    make_corpus(tmp_path / "corpus")
    out = tmp_path / "evals" / "test6.jsonl"
    count = main(["--manifest", str(tmp_path / "corpus" / "manifest.jsonl"), "--split", "test", "--per-domain", "2",
                  "--transcribed-english", "1", "--out", str(out)])
    rows = list(read_manifest(out))
    assert count == len(rows) == 6
    assert all((out.parent / r["path"]).is_file() for r in rows)
    assert [r["transcript"] is not None for r in rows if r["domain"] == "speech"] == [True, False]
    assert "6 clips" in capsys.readouterr().out
    assert not list(out.parent.glob("*.tmp*"))


def test_an_empty_selection_and_a_missing_manifest_are_one_line_errors(tmp_path) -> None:
    make_corpus(tmp_path)
    with pytest.raises(SystemExit, match="no valid clip"):
        main(["--manifest", str(tmp_path / "manifest.jsonl"), "--split", "valid", "--per-domain", "2",
              "--out", str(tmp_path / "v.jsonl")])
    with pytest.raises(SystemExit, match="missing.jsonl"):
        main(["--manifest", str(tmp_path / "missing.jsonl"), "--split", "test", "--per-domain", "2",
              "--out", str(tmp_path / "v.jsonl")])
    (tmp_path / "odd.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(SystemExit, match="lacks the key"):
        main(["--manifest", str(tmp_path / "odd.jsonl"), "--split", "test", "--per-domain", "2",
              "--out", str(tmp_path / "v.jsonl")])
