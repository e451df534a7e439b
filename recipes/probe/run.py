"""Probe semantic tokens over the corpus labels, for every codec token rate, as one Markdown table.

    python -m recipes.probe.run --config recipes/probe/configs/tiny.yaml

For each codec in ``codecs`` (label -> shipped name, ``save_pretrained`` folder or
``official-<rate>-<vocab>``), ``semanticodec_lm/probe.py`` (``semanticodec probe``) fits linear and MLP probes
on pooled semantic, acoustic, semantic+acoustic and mel-k-means features for each task the
manifest labels (domain, sound class, instrument family, language) and scores them on the
evaluation splits; its own outputs go to ``<out>/<label>/``. A codec listed under ``tokens``
(label -> token manifest of ``recipes/tokenize/tokenize_corpus.py``, made from ``manifest`` by that
codec) is probed from those tokens (``--tokens``) instead of encoding every clip again. A codec
listed under ``semantic_codebooks`` (label -> a ``recipes/codec/train_kmeans.py`` run, any token
rate) has the semantic tokens of that codebook over its AudioMAE probed (``--semantic-codebook``):
semantic, continuous and mel-k-means rows only; ``audiomae_runs`` (label -> a
``recipes/codec/train_audiomae.py`` run) then swaps in that run's AudioMAE. A codec
whose results exist with the same settings is skipped, so a killed run resumes. Then ``<out>/probe.md`` gathers one table: a
row per (task, features), a column pair (linear / MLP accuracy on ``report_split``) per codec,
and the majority-class accuracy. ``<out>/probe.json`` holds every number and the time per codec.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from codec.files import write_text_atomic
from semanticodec_lm.training.runs import log_to_wandb
from semanticodec_lm.probe import FEATURE_SETS, TASKS, ProbeSettings, run_probe, settings_record
from semanticodec_lm.training.config import load_recipe_config

KNOWN_KEYS = {"manifest", "out", "codecs", "tokens", "semantic_codebooks", "audiomae_runs", "tasks", "train_split", "eval_splits", "report_split", "limit",
              "kmeans_frames", "seed", "device", "logger", "wandb"}


def probe_settings(config: dict[str, Any], source: str, output: Path, tokens: str | None = None,
                   semantic_codebook: str | None = None, audiomae: str | None = None) -> ProbeSettings:
    """The probe of one codec as the recipe configures it.

    With ``tokens`` (a token manifest made by that codec) the clips come from it, not from ``manifest``;
    with ``semantic_codebook`` (a k-means run) its semantic tokens are probed over the codec's AudioMAE
    (or the AudioMAE of the run ``audiomae``).
    """
    settings = ProbeSettings(
        output=str(output), manifest=None if tokens else str(config["manifest"]), tokens=tokens, model=source,
        semantic_codebook=semantic_codebook, audiomae=audiomae, device=str(config.get("device", "cpu")),
        tasks=tuple(config.get("tasks") or TASKS), train_split=str(config.get("train_split", "train")),
        eval_splits=tuple(config.get("eval_splits") or ("valid", "test")),
        limit=None if config.get("limit") is None else int(config["limit"]),
        kmeans_frames=int(config.get("kmeans_frames", 100_000)), seed=int(config.get("seed", 0)))
    try:
        settings.check()
    except ValueError as error:
        raise SystemExit(f"[probe {output.name}] {error}") from None
    return settings


def probe_codec(config: dict[str, Any], label: str, source: str, out: Path, tokens: str | None = None,
                semantic_codebook: str | None = None, audiomae: str | None = None) -> dict[str, Any]:
    """Run (or reuse) the probe of one codec (from its token manifest ``tokens`` if given, with the
    k-means run ``semantic_codebook`` if given); returns its ``probe.json`` report plus ``seconds``."""
    settings = probe_settings(config, source, out / label, tokens, semantic_codebook, audiomae)
    report_path = out / label / "probe.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("settings") == settings_record(settings) and "seconds" in report:
            print(f"[probe {label}] done before; reusing {report_path}", flush=True)
            return report
    started = time.monotonic()
    run_probe(settings)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["seconds"] = round(time.monotonic() - started, 1)
    write_text_atomic(report_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def combined_table(reports: dict[str, dict[str, Any]], split: str) -> str:
    """Rows (task, features); per codec, linear and MLP accuracy on ``split``; the majority accuracy last."""
    labels = list(reports)
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for label, report in reports.items():
        for result in report["results"]:
            if result["split"] == split:
                cells.setdefault((result["task"], result["features"]), {})[label] = result
    columns = [f"{label} ({reports[label]['codec']}, {reports[label].get('token_rate', '?')} tokens/s) linear / MLP"
               for label in labels]
    header = ["Task", "Features", *columns, "Majority"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = sorted(cells, key=lambda key: (TASKS.index(key[0]), FEATURE_SETS.index(key[1])))
    for task, features in order:
        row = cells[(task, features)]
        scores = [f"{row[label]['linear_accuracy']:.3f} / {row[label]['mlp_accuracy']:.3f}" if label in row else "–"
                  for label in labels]
        majority = next(iter(row.values()))["majority_accuracy"]
        clips = next(iter(row.values()))["clips"]
        lines.append(f"| {task} ({clips} clips) | {features} | " + " | ".join(scores) + f" | {majority:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the probes as configured; returns the combined report (also ``<out>/probe.json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (recipes/probe/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. codecs.small-50=runs/codec-small-50")
    args = parser.parse_args(argv)
    config = load_recipe_config(args.config, args.overrides, KNOWN_KEYS)
    codecs = {label: source for label, source in (config.get("codecs") or {}).items() if source}
    if not codecs or not config.get("manifest"):
        raise SystemExit(f"{args.config}: 'manifest' and at least one entry under 'codecs' are required")
    tokens = config.get("tokens") or {}
    codebooks = config.get("semantic_codebooks") or {}
    audiomae_runs = config.get("audiomae_runs") or {}
    for key, mapping, what in (("tokens", tokens, "token manifests"), ("semantic_codebooks", codebooks, "k-means runs"),
                               ("audiomae_runs", audiomae_runs, "AudioMAE runs")):
        if not isinstance(mapping, dict):
            raise SystemExit(f"{args.config}: '{key}' must map codec labels to {what}")
        strays = sorted(str(label) for label, path in mapping.items() if path and label not in (config.get("codecs") or {}))
        if strays:
            raise SystemExit(f"{args.config}: '{key}' names codec(s) {strays} that are not under 'codecs'")
    out = Path(config.get("out", "runs/probe"))
    split = str(config.get("report_split", "test"))
    reports = {}
    for label, source in codecs.items():
        manifest, codebook, audiomae = tokens.get(label), codebooks.get(label), audiomae_runs.get(label)
        try:
            reports[label] = probe_codec(config, str(label), str(source), out, str(manifest) if manifest else None,
                                         str(codebook) if codebook else None, str(audiomae) if audiomae else None)
        except ValueError as error:  # a configuration problem (unknown codec, no training clips...)
            raise SystemExit(f"[probe {label}] {error}") from None
    table = combined_table(reports, split)
    markdown = (f"# Semantic-token probes on `{config['manifest']}` ({split} split)\n\n"
                "Accuracy of a linear and an MLP probe on pooled token embeddings (mel-kmeans: the baseline "
                "of k-means over log-mel frames with the codec's semantic vocabulary size).\n\n" + table +
                "\nTime (s): " + ", ".join(f"{label} {report['seconds']:g}" for label, report in reports.items()) + "\n")
    write_text_atomic(out / "probe.md", markdown)
    combined = {"settings": {key: config.get(key) for key in sorted(KNOWN_KEYS)}, "reports": reports}
    write_text_atomic(out / "probe.json", json.dumps(combined, indent=2, allow_nan=False) + "\n")
    metrics = {f"{label}/{r['task']}/{r['features']}/linear": r["linear_accuracy"]
               for label, report in reports.items() for r in report["results"] if r["split"] == split}
    log_to_wandb(config, out, metrics, {"probe": markdown})
    print(markdown, flush=True)
    return combined


if __name__ == "__main__":
    main()
