"""The corpus build on small fake sources: reports, splits by item, determinism, resumption, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recipes.data.build import build_corpus, main
from recipes.data.clips import ClipSettings
from semanticodec_lm.corpus.manifest import read_manifest, validate_manifest
from recipes.data.recording import Recording
from recipes.data.sources.base import Job
from recipes.data.sources.effects import BucklespringTyping
from recipes.data.sources.music import GameMusic
from semanticodec_lm.corpus.splits import split_for
from recipes.data.world.family import SyntheticWorld

PURE = ("tone", "chord", "melody", "drums", "noise", "beeps")
SETTINGS = ClipSettings(min_seconds=1.0, max_seconds=4.0)


@dataclass
class FakeDpkg:
    """Stands in for dpkg/apt: ``installed`` packages exist, ``installable`` ones can be installed."""

    installed: set[str]
    installable: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, command):
        command = list(command)
        self.calls.append(command)
        if command[0] == "dpkg-query":
            status = "install ok installed" if command[-1] in self.installed else ""
            return subprocess.CompletedProcess(command, 0 if status else 1, status, "")
        if command[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(command, 0, "", "")
        if command[:2] == ["apt-get", "install"]:
            wanted = [name for name in command[2:] if not name.startswith("-")]
            missing = [name for name in wanted if name not in self.installable]
            if missing:
                return subprocess.CompletedProcess(command, 100, "", f"E: Unable to locate package {missing[0]}")
            self.installed.update(wanted)
            return subprocess.CompletedProcess(command, 0, "", "")
        raise AssertionError(f"unexpected command {command}")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A fake soundtrack (two good tracks, one 9 s long, and one corrupt file) and fake key clicks."""
    root = tmp_path_factory.mktemp("sources")
    music = root / "music"
    music.mkdir()
    time = np.arange(int(9.0 * 44100)) / 44100
    soundfile.write(music / "long_theme.ogg", 0.3 * np.sin(2 * np.pi * 220 * time), 44100, format="OGG")
    soundfile.write(music / "short.ogg", 0.3 * np.sin(2 * np.pi * 330 * time[:44100]), 44100, format="OGG")
    (music / "broken.ogg").write_bytes(b"OggS" + bytes(range(256)) * 40)
    keys = root / "keys"
    keys.mkdir()
    rng = np.random.default_rng(0)
    for key in range(40):
        for phase in (0, 1):
            click = rng.standard_normal(800) * np.exp(-np.arange(800) / 100) * 0.3
            soundfile.write(keys / f"{key:02x}-{phase}.wav", click, 44100)
    return root


def _families(sources: Path, world_seed: int = 5) -> list:
    return [GameMusic("fake-music", str(sources / "music"), "Fake Game", "test music", "CC0-1.0"),
            GameMusic("missing-music", str(sources / "nowhere"), "Absent Game", "test music", "CC0-1.0"),
            BucklespringTyping("fake-keys", str(sources / "keys"), files_per_sequence=8, seconds=(1.5, 2.5)),
            SyntheticWorld(10, world_seed, 1.5, 2.5, PURE)]


def _build(out: Path, families: list, dpkg: FakeDpkg | None = None, workers: int = 1):
    dpkg = dpkg or FakeDpkg({"fake-music", "fake-keys"})
    return build_corpus(out, families, SETTINGS, workers=workers, runner=dpkg, log=lambda message: None)


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.flac"))}


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    dpkg = FakeDpkg({"fake-music", "fake-keys"})
    return out, _build(out, _families(sources), dpkg), dpkg


def test_manifests_validate(built) -> None:
    out, report, _ = built
    assert validate_manifest(out / "manifest.jsonl", min_seconds=1.0, max_seconds=4.0) == []
    split_rows = [row for split in ("train", "valid", "test") for row in read_manifest(out / f"manifest.{split}.jsonl")]
    assert sorted(row["id"] for row in split_rows) == sorted(row["id"] for row in report.rows)


def test_missing_package_is_reported_and_skipped(built) -> None:
    _, report, dpkg = built
    assert "missing-music" in report.problems.missing_packages
    assert "Unable to locate" in report.problems.missing_packages["missing-music"]
    assert sum(call[:2] == ["apt-get", "update"] for call in dpkg.calls) == 1
    assert not any(row["source_package"] == "missing-music" for row in report.rows)
    assert {row["source_package"] for row in report.rows} == {"fake-music", "fake-keys", "synthetic-world"}


def test_corrupt_source_is_reported_and_skipped(built, sources) -> None:
    _, report, _ = built
    broken = str(sources / "music" / "broken.ogg")
    assert list(report.errors) == [f"fake-music:{broken}"]
    assert "broken.ogg" in report.errors[f"fake-music:{broken}"]
    assert all(broken not in row["source_items"] for row in report.rows)


def test_long_tracks_are_cut_and_short_ones_kept(built, sources) -> None:
    _, report, _ = built
    theme = [row for row in report.rows if row["source_items"] == [str(sources / "music" / "long_theme.ogg")]]
    assert [row["clip_index"] for row in theme] == [0, 1, 2]  # 9 s in pieces of at most 4 s
    assert all(row["params"]["pieces"] == 3 and 2.9 < row["duration"] <= 4.0 for row in theme)
    assert len({row["split"] for row in theme}) == 1


def test_splits_follow_the_rule_and_are_disjoint_by_item(built) -> None:
    _, report, _ = built
    split_of_item: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in report.rows:
        for item in row["source_items"]:
            split_of_item[(row["source_package"], item)].add(row["split"])
            assert row["split"] == split_for(row["source_package"], item)
    assert all(len(splits) == 1 for splits in split_of_item.values())
    typing = [row for row in report.rows if row["source_package"] == "fake-keys"]
    assert typing and any(len(row["source_items"]) > 1 for row in typing)


def test_summary_and_attribution(built) -> None:
    out, report, _ = built
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all"]["all"]["clips"] == len(report.rows)
    assert summary["all"]["all"]["hours"] == pytest.approx(sum(row["duration"] for row in report.rows) / 3600)
    assert summary["all"]["all"]["megabytes"] > 0
    attribution = (out / "ATTRIBUTION.md").read_text()
    for row in report.rows:
        if not row["synthetic"]:
            assert all(f"`{item}`" in attribution for item in row["source_items"])
    assert "## fake-keys" in attribution and "GPL-2+" in attribution and "## synthetic-world" in attribution


def test_rerun_reuses_everything_and_installs_nothing(built, sources) -> None:
    out, first, _ = built
    before = (out / "manifest.jsonl").read_bytes()
    families = _families(sources)[:1] + _families(sources)[2:]
    dpkg = FakeDpkg({package for family in families for package in family.packages})
    again = _build(out, families, dpkg)
    assert again.reused_jobs == again.jobs - 1  # all but the corrupt file, which is tried again
    assert (out / "manifest.jsonl").read_bytes() == before
    assert not any(call[0] == "apt-get" for call in dpkg.calls)


def test_same_seed_gives_identical_corpus(built, sources, tmp_path) -> None:
    first, _, _ = built
    _build(tmp_path / "again", _families(sources))
    _build(tmp_path / "other", _families(sources, world_seed=6))
    assert (tmp_path / "again" / "manifest.jsonl").read_bytes() == (first / "manifest.jsonl").read_bytes()
    assert _digest(tmp_path / "again") == _digest(first)
    assert (tmp_path / "other" / "manifest.jsonl").read_bytes() != (first / "manifest.jsonl").read_bytes()


@pytest.mark.slow
def test_worker_processes_give_the_same_corpus(built, sources, tmp_path) -> None:
    first, _, _ = built
    _build(tmp_path, _families(sources), workers=2)  # spawned workers start slowly: 10-20 s
    assert (tmp_path / "manifest.jsonl").read_bytes() == (first / "manifest.jsonl").read_bytes()
    assert _digest(tmp_path) == _digest(first)


@dataclass(frozen=True)
class InterruptedWorld:
    """A synthetic world whose renderer is interrupted (like Ctrl-C) after ``allowed`` clips."""

    inner: SyntheticWorld
    allowed: int
    counter: list = field(default_factory=lambda: [0])
    name: str = "world"

    @property
    def packages(self) -> tuple[str, ...]:
        return ()

    def jobs(self, available, problems) -> list[Job]:
        return self.inner.jobs(available, problems)

    def render(self, job: Job) -> Recording:
        if self.counter[0] >= self.allowed:
            raise KeyboardInterrupt
        self.counter[0] += 1
        return self.inner.render(job)


def test_interrupted_build_resumes_without_duplicates(tmp_path) -> None:
    world = SyntheticWorld(12, 8, 1.5, 2.5, PURE)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, [InterruptedWorld(world, allowed=5)])
    assert len(list(tmp_path.rglob("*.flac"))) == 5 and not (tmp_path / "manifest.jsonl").exists()
    resumed = _build(tmp_path, [world])
    assert resumed.reused_jobs == 5 and len(resumed.rows) == 12
    ids = [row["id"] for row in read_manifest(tmp_path / "manifest.jsonl")]
    assert len(ids) == len(set(ids)) == 12
    assert len(list(tmp_path.rglob("*.flac"))) == 12 and not list(tmp_path.rglob("*.tmp"))
    fresh = _build(tmp_path / "fresh", [world])
    assert [row["id"] for row in fresh.rows] == [row["id"] for row in resumed.rows]


def test_cli_builds_from_a_config(tmp_path, capsys) -> None:
    # --skip-install: dpkg is only asked what is installed; apt-get is never run.
    config = tmp_path / "corpus.yaml"
    config.write_text("families: []\nclips: {min_seconds: 1.0, max_seconds: 5.0}\n"
                      "synthetic: {clips: 3, seed: 1, min_seconds: 1.0, max_seconds: 2.0, kinds: [tone]}\n")
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--skip-install", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "3 clips" in printed and "speech" in printed and "hours" in printed
    assert len(list(read_manifest(tmp_path / "out" / "manifest.jsonl"))) == 3


def test_cli_rejects_bad_configs(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--config", str(tmp_path / "absent.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthetic: {clips: 2, kinds: [kazoo]}\n")
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--out", str(tmp_path / "out"), "--skip-install"])
    assert "kazoo" in capsys.readouterr().err
