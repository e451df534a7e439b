"""Build the offline corpus in one command: install sources, cut real recordings, generate the world.

    python -m recipes.data.build --out data/corpus [--synthetic-clips N] [--seed S] [--skip-install]

Defaults come from ``recipes/data/corpus.yaml``. The build is idempotent and resumable: finished
jobs are reused, and the manifests are rewritten from this run's rows. A missing package or a
corrupt source is reported and skipped; the build goes on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codec.files import write_text_atomic
from recipes.data.clips import ClipSettings, JobResult, run_job
from recipes.data.install import CommandRunner, InstallReport, ensure_packages, run_command
from recipes.data.report import attribution_markdown, format_summary, summarise
from recipes.data.sources.asterisk import ASTERISK_LANGUAGES
from recipes.data.sources.base import Job, Problems, SourceFamily
from recipes.data.sources.effects import BucklespringTyping, OpenSfx
from recipes.data.sources.gcompris import GcomprisBundles
from recipes.data.sources.music import GAME_MUSIC, SonicPiSamples
from recipes.data.world.family import SyntheticWorld
from codec.manifest import write_manifest
from codec.manifest import SPLITS
from semanticodec_lm.training.config import read_config_file

DEFAULT_CONFIG = Path(__file__).with_name("corpus.yaml")
REAL_FAMILIES = ("asterisk", "game_music", "gcompris", "opensfx", "bucklespring", "sonic_pi")


@dataclass
class BuildReport:
    """Everything a build did: installs, problems, per-job errors, counts and the summary table."""

    install: InstallReport
    problems: Problems
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    jobs: int = 0
    reused_jobs: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report without the rows (those are in the manifest)."""
        return {"install": asdict(self.install), "missing_packages": self.problems.missing_packages,
                "problems": self.problems.messages, "errors": self.errors, "skipped": self.skipped,
                "jobs": self.jobs, "reused_jobs": self.reused_jobs, "clips": len(self.rows),
                "seconds": round(self.seconds, 1), "summary": self.summary}


def default_families(config: dict[str, Any]) -> list[SourceFamily]:
    """The source families named in ``config["families"]`` plus the synthetic world."""
    chosen = set(config.get("families", REAL_FAMILIES))
    unknown = chosen - set(REAL_FAMILIES)
    if unknown:
        raise ValueError(f"unknown source families {sorted(unknown)}; expected some of {REAL_FAMILIES}")
    families: list[SourceFamily] = []
    if "asterisk" in chosen:
        families += ASTERISK_LANGUAGES
    if "game_music" in chosen:
        families += GAME_MUSIC
    families += [family for name, family in (("gcompris", GcomprisBundles()), ("opensfx", OpenSfx()),
                                             ("bucklespring", BucklespringTyping()), ("sonic_pi", SonicPiSamples()))
                 if name in chosen]
    world = config.get("synthetic", {})
    if int(world.get("clips", 0)) > 0:
        kinds = tuple(world["kinds"]) if world.get("kinds") else None
        families.append(SyntheticWorld(int(world["clips"]), int(world.get("seed", 0)),
                                       float(world.get("min_seconds", 3.0)), float(world.get("max_seconds", 8.0)),
                                       kinds))
    return families


def _worker_setup() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker; the machine has few


def build_corpus(
    out_dir: str | os.PathLike[str],
    families: Sequence[SourceFamily],
    settings: ClipSettings | None = None,
    workers: int = 2,
    install: bool = True,
    runner: CommandRunner = run_command,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Build (or resume) the corpus in ``out_dir`` from ``families``; returns the :class:`BuildReport`.

    Writes ``manifest.jsonl``, ``manifest.<split>.jsonl``, ``ATTRIBUTION.md``, ``summary.json`` and
    ``build_report.json``; audio under ``audio/<split>/<domain>/<package>/``.
    """
    started = time.monotonic()
    settings = settings or ClipSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    packages = [package for family in families for package in family.packages]
    install_report = ensure_packages(packages, runner, allow_install=install)
    for package, reason in install_report.failed.items():
        log(f"package {package}: {reason}")
    problems = Problems(missing_packages=dict(install_report.failed))
    jobs = [(family, job) for family in families for job in family.jobs(install_report.available, problems)]
    for message in problems.messages:
        log(message)
    report = BuildReport(install_report, problems, jobs=len(jobs))
    log(f"{len(jobs)} jobs from {len(families)} source families")
    for done, result in enumerate(_run_all(jobs, out_dir, settings, workers), start=1):
        if result.error is not None:
            report.errors[f"{result.job.package}:{result.job.key}"] = result.error
            log(f"skipped {result.job.package}:{result.job.key}: {result.error}")
        report.reused_jobs += result.reused
        report.skipped += result.skipped
        report.rows += result.rows
        if done % 200 == 0 or done == len(jobs):
            log(f"{done}/{len(jobs)} jobs, {len(report.rows)} clips")
    _check_unique(report.rows)
    report.rows.sort(key=lambda row: (row["split"], row["domain"], row["source_package"], row["id"]))
    write_manifest(out_dir / "manifest.jsonl", report.rows)
    for split in SPLITS:
        write_manifest(out_dir / f"manifest.{split}.jsonl", [row for row in report.rows if row["split"] == split])
    write_text_atomic(out_dir / "ATTRIBUTION.md", attribution_markdown(report.rows))
    report.summary = summarise(report.rows, out_dir)
    report.seconds = time.monotonic() - started
    write_text_atomic(out_dir / "summary.json", json.dumps(report.summary, indent=2))
    write_text_atomic(out_dir / "build_report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    return report


def _run_all(
    jobs: list[tuple[SourceFamily, Job]], out_dir: Path, settings: ClipSettings, workers: int
) -> Iterator[JobResult]:
    if workers <= 1:
        import torch

        # The clips are small: torch's thread pool only adds contention (6x slower on 2 busy cores).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for family, job in jobs:
                yield run_job(family, job, out_dir, settings)
        finally:
            torch.set_num_threads(threads)
        return
    # spawn, not fork: a forked copy of a process that has touched torch's thread pools can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_setup) as pool:
        futures = [pool.submit(run_job, family, job, out_dir, settings) for family, job in jobs]
        for future in futures:
            yield future.result()


def _check_unique(rows: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise RuntimeError(f"two jobs produced the clip id {row['id']!r}; job keys must be unique")
        seen.add(row["id"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 even when some sources were skipped)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML with the defaults")
    parser.add_argument("--out", help="output folder (default from the config: data/corpus)")
    parser.add_argument("--synthetic-clips", type=int, help="number of synthetic-world clips")
    parser.add_argument("--seed", type=int, help="synthetic world seed")
    parser.add_argument("--skip-install", action="store_true", help="never call apt-get; use what is installed")
    parser.add_argument("--workers", type=int, help="worker processes")
    parser.add_argument("--families", nargs="*", choices=REAL_FAMILIES, help="real-recording families to build")
    args = parser.parse_args(argv)
    config = read_config_file(args.config)
    synthetic = dict(config.get("synthetic", {}))
    if args.synthetic_clips is not None:
        synthetic["clips"] = args.synthetic_clips
    if args.seed is not None:
        synthetic["seed"] = args.seed
    config["synthetic"] = synthetic
    if args.families is not None:
        config["families"] = args.families
    clip_config = config.get("clips", {})
    settings = ClipSettings(float(clip_config.get("min_seconds", 1.0)), float(clip_config.get("max_seconds", 10.0)))
    if not 0 < settings.min_seconds <= settings.max_seconds:
        parser.error(f"bad clip length range {settings.min_seconds}..{settings.max_seconds} s")
    try:
        families = default_families(config)
    except (ValueError, TypeError, KeyError) as error:
        parser.error(f"bad configuration in {args.config}: {error}")
    report = build_corpus(args.out or config.get("out", "data/corpus"), families, settings,
                          workers=args.workers or int(config.get("workers", 2)), install=not args.skip_install)
    print(format_summary(report.summary))
    print(f"{len(report.rows)} clips ({report.reused_jobs} of {report.jobs} jobs reused) in {report.seconds:.0f} s; "
          f"{len(report.errors)} jobs failed, {len(report.problems.missing_packages)} packages missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
