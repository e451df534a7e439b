"""Text-to-audio, end to end: tokenize, train the caption tokenizer and a text-conditioned LM, generate, measure.

    python -m recipes.text_to_audio.run --config recipes/text_to_audio/configs/tiny.yaml

Steps (each skipped when already done with the same settings, so a killed run resumes):

1. tokenize the corpus (``recipes/tokenize``; section ``tokenize``);
2. train the sentencepiece caption tokenizer on the training captions (section ``text_tokenizer``);
3. train the text-conditioned LM (``recipes/lm/train.py`` with ``data.text_tokenizer``; section
   ``train``; captions are dropped ``data.text_dropout`` of the time, for guidance) and export it
   as an LM folder ``<run_dir>/model``;
4. validation loss and perplexity on the ``valid`` clips with their captions, and the loss with
   another clip's caption and with none (how much the LM uses its caption);
5. for each guidance scale in ``cfg_scales``, generate ``seconds`` of audio from the captions of
   synthetic-world clips of the evaluation split and decode it (``<run_dir>/samples/cfg<s>/``);
6. adherence: the fraction of generated clips whose measured property (note pitch, tempo, noise
   colour, kind; ``semanticodec_lm/measure.py``) is the one the caption states, per scale,
   next to the same measurement on the original clips (how reliable the measurement is) and on
   their codec reconstructions (the first ``seconds`` encoded and decoded with the same decoder
   settings: the most any LM can reach through this codec).

Outputs: ``results.md`` and ``results.json`` (with the time each step took) in ``run_dir``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import soundfile
import torch

from lm.api import AudioGenerator
from semanticodec_lm.training.runs import log_to_wandb
from semanticodec_lm.measure import PROPERTIES, fraction_table, matches, measure, stated_properties
from semanticodec_lm.corpus.manifest import evenly_spaced
from semanticodec_lm.training import lm_pipeline as pipeline
from semanticodec_lm.training.config import load_recipe_config

# The tokenize and LM-training recipes this one drives (as subprocesses, so each can start its own DDP ranks).
STEPS = pipeline.LMSteps(tokenize_module="recipes.tokenize.tokenize_corpus", train_module="recipes.lm.train",
                         tokenize_config="recipes/tokenize/configs/tiny.yaml", train_config="recipes/lm/configs/tiny.yaml")
EVALUATE_DEFAULTS = {"split": "test", "captions": 48, "kinds": None, "seconds": 5.0, "cfg_scales": [1.0, 3.0, 5.0],
                     "temperature": 1.0, "top_k": None, "top_p": None, "batch_size": 8, "decode_steps": 10,
                     "sampler": "dpmpp2m", "probe_clips": 400}


def choose_captions(manifest: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to ``captions`` synthetic clips (of ``kinds`` when given) of the evaluation split, evenly spaced."""
    kinds = settings.get("kinds")
    rows = [row for row in pipeline.token_rows(manifest, settings["split"])
            if stated_properties(row) and (not kinds or row["params"]["kind"] in kinds)]
    return evenly_spaced(rows, int(settings["captions"]))


def generate_from_captions(generator: AudioGenerator, rows: list[dict[str, Any]], settings: dict[str, Any],
                           cfg_scale: float, out_dir: Path, seed: int) -> list[Path]:
    """One wav per caption at guidance ``cfg_scale`` (existing ones kept); batch n uses seed + n at every scale."""

    def make(batch: list[int], number: int) -> list[torch.Tensor]:
        audio, _ = generator.generate(
            text=[rows[i]["caption"] for i in batch], seconds=settings["seconds"], seed=seed + number,
            cfg_scale=cfg_scale, temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
            decode_steps=int(settings["decode_steps"]), sampler=settings["sampler"],
        )
        return [row_audio[0] for row_audio in audio]

    return pipeline.write_in_batches(rows, out_dir, int(settings["batch_size"]), make, f"generate cfg {cfg_scale:g}")


def adherence(stated: list[dict[str, Any]], measured: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per property: (clips whose measurement matches the caption, clips whose caption states it)."""
    table = {}
    for name in PROPERTIES:
        pairs = [(s[name], m[name]) for s, m in zip(stated, measured) if name in s]
        if pairs:
            table[name] = (sum(matches(name, s, m) for s, m in pairs), len(pairs))
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the results (also written to ``<run_dir>/results.json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (recipes/text_to_audio/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    config = load_recipe_config(args.config, args.overrides, pipeline.RECIPE_KEYS)
    settings = {**EVALUATE_DEFAULTS, **(config.get("evaluate") or {})}
    seed = int(config.get("seed", 0))
    run_dir = Path(config.get("run_dir", "runs/text-to-audio"))
    run_dir.mkdir(parents=True, exist_ok=True)

    manifest, tokenize_report, model_dir, train_summary, validation, timings = pipeline.tokenize_and_train(
        config, run_dir, STEPS, with_text=True)

    rows = choose_captions(manifest, settings)
    if not rows:
        raise SystemExit(f"{manifest}: no {settings['split']} clip of the synthetic world to take captions from")
    stated = [stated_properties(row) for row in rows]
    generator = AudioGenerator.from_pretrained(model_dir)
    started = time.monotonic()
    made_with = {"model": train_summary.get("parameters"), "codec": pipeline.weights_digest(generator.codec),
                 "seed": seed, "settings": settings, "clips": [row["id"] for row in rows]}
    folder = pipeline.samples_folder(run_dir / "samples", made_with)
    samples = {float(scale): generate_from_captions(generator, rows, settings, float(scale),
                                                    folder / f"cfg{float(scale):g}", seed)
               for scale in settings["cfg_scales"]}
    timings["generate"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    reconstructions = pipeline.reconstruct_clips(generator.codec, manifest, rows, settings["seconds"], settings,
                                                 folder / "reconstruction", seed)
    timings["reconstruct"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    probe = pipeline.fit_kind_probe(Path(tokenize_report["manifest"]), int(settings["probe_clips"]), seed)
    columns = {"original audio": [measure(pipeline.clip_audio(manifest, row), list(s), probe)
                                  for row, s in zip(rows, stated)],
               "codec reconstruction": [measure(soundfile.read(path, dtype="float32")[0], list(s), probe)
                                        for path, s in zip(reconstructions, stated)]}
    for scale, paths in samples.items():
        columns[f"cfg {scale:g}"] = [measure(soundfile.read(path, dtype="float32")[0], list(s), probe)
                                     for path, s in zip(paths, stated)]
    scores = {column: adherence(stated, measured) for column, measured in columns.items()}
    timings["measure"] = round(time.monotonic() - started, 1)

    by_property = {name: {column: scores[column][name] for column in scores if name in scores[column]}
                   for name in PROPERTIES if name in scores["original audio"]}
    table = fraction_table("Property stated by the caption", list(columns), by_property)
    markdown = (
        f"# Text-to-audio: caption adherence against classifier-free guidance\n\n"
        f"LM `{model_dir}` ({train_summary.get('global_step', '?')} steps), codec `{tokenize_report['codec']}`, "
        f"{len(rows)} {settings['split']} captions of the synthetic world, {settings['seconds']:g} s each, "
        f"temperature {settings['temperature']}, top-k {settings['top_k']}, top-p {settings['top_p']}, "
        f"{settings['decode_steps']} decoder steps ({settings['sampler']}).\n\n"
        f"Validation: loss {validation['valid_loss']}, perplexity {validation['valid_perplexity']} "
        f"({validation['valid_clips']} clips); loss with another clip's caption "
        f"{validation.get('valid_loss_other_caption')}, with none {validation.get('valid_loss_no_caption')}.\n\n"
        + pipeline.caption_worth_table(validation) + table +
        "\nTime (s): " + ", ".join(f"{step} {seconds:g}" for step, seconds in timings.items()) + "\n"
    )
    results = {"validation": validation,
               "adherence": {column: {name: list(cell) for name, cell in cells.items()}
                             for column, cells in scores.items()},
               "clips": [{"id": row["id"], "caption": row["caption"], "stated": s,
                          **{column: measured[i] for column, measured in columns.items()}}
                         for i, (row, s) in enumerate(zip(rows, stated))],
               "settings": settings, "train": train_summary, "timings_seconds": timings,
               "tokenize": {key: tokenize_report.get(key) for key in ("clips", "audio_seconds", "this_run", "codec")}}
    pipeline.write_results(run_dir, results, markdown)
    fractions = {f"adherence_{name}_{column.replace(' ', '')}": hits / total
                 for column, cells in scores.items() for name, (hits, total) in cells.items() if total}
    metrics = {**validation, **fractions}
    log_to_wandb(config, run_dir / "train", metrics, {"text_to_audio": markdown})
    print(markdown, flush=True)
    return results


if __name__ == "__main__":
    main()
