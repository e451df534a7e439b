"""Audio continuation, end to end: tokenize the corpus, train an LM, continue prompts, measure.

    python -m recipes.continuation.run --config recipes/continuation/configs/tiny.yaml

Steps (each skipped when already done with the same settings, so a killed run resumes):

1. tokenize the corpus (``recipes/tokenize``; section ``tokenize``: its config and overrides);
2. train an LM on the tokens (``recipes/lm/train.py``; section ``train``) and export it as an LM
   folder ``<run_dir>/model`` (usable with ``semanticodec generate --model``);
3. validation loss and perplexity of that LM on the ``valid`` clips;
4. continue the first ``prompt_seconds`` of test clips of the synthetic world by
   ``continue_seconds`` and decode through the diffusion decoder: ``<run_dir>/samples/<clip>.wav``
   holds the prompt's reconstruction followed by the continuation;
5. measure each clip's stated properties (pitch, tempo, noise colour, kind; see
   ``semanticodec_lm/measure.py``) on the prompt (original audio) and on the continuation, and
   count how often the continuation keeps them, next to chance (prompt i against the continuation
   of another clip j) and next to the codec's own reconstruction of the prompt (encoded and decoded
   with the same decoder settings: the most any LM can keep through this codec).

With ``model`` (an LM folder or shipped name; ``configs/default.yaml`` names the shipped LM), step
2 is skipped and that LM is evaluated; its codec must be the one the corpus is tokenized with.

Outputs: ``results.md``, ``results.json`` (with the time each step took) in ``run_dir``. Any
config entry can be overridden as ``section.key=value`` (YAML), e.g.
``train.overrides.trainer.devices=4 train.overrides.trainer.strategy=ddp``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import soundfile
import torch

from codec.config import SAMPLE_RATE
from lm.api import AudioGenerator
from semanticodec_lm.training.runs import log_to_wandb
from semanticodec_lm.measure import fraction_table, matches, measure, stated_properties
from semanticodec_lm.corpus.manifest import evenly_spaced
from semanticodec_lm.training import lm_pipeline as pipeline
from semanticodec_lm.training.config import load_recipe_config

# The tokenize and LM-training recipes this one drives (as subprocesses, so each can start its own DDP ranks).
STEPS = pipeline.LMSteps(tokenize_module="recipes.tokenize.tokenize_corpus", train_module="recipes.lm.train",
                         tokenize_config="recipes/tokenize/configs/tiny.yaml", train_config="recipes/lm/configs/tiny.yaml")
EVALUATE_DEFAULTS = {"split": "test", "prompts": 24, "kinds": None, "prompt_seconds": 3.0, "continue_seconds": 5.0,
                     "temperature": 1.0, "top_k": None, "top_p": None, "batch_size": 8, "decode_steps": 10,
                     "sampler": "dpmpp2m", "probe_clips": 400}


def choose_prompts(manifest: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to ``prompts`` synthetic clips (of ``kinds`` when given) of the evaluation split that last at
    least ``prompt_seconds``, evenly spaced in manifest order."""
    kinds = settings.get("kinds")
    rows = [row for row in pipeline.token_rows(manifest, settings["split"])
            if stated_properties(row) and float(row.get("duration", 0.0)) >= settings["prompt_seconds"]
            and (not kinds or row["params"]["kind"] in kinds)]
    return evenly_spaced(rows, int(settings["prompts"]))


def generate_continuations(generator: AudioGenerator, manifest: Path, rows: list[dict[str, Any]],
                           settings: dict[str, Any], out_dir: Path, seed: int) -> list[Path]:
    """Continue each row's prompt; one wav per row (existing ones are kept); returns their paths."""
    prompt_samples = int(round(settings["prompt_seconds"] * SAMPLE_RATE))

    def make(batch: list[int], number: int) -> list[torch.Tensor]:
        prompts = torch.stack([torch.from_numpy(pipeline.clip_audio(manifest, rows[i])[:prompt_samples])
                               for i in batch])
        audio, _ = generator.generate(
            prompt=prompts, sample_rate=SAMPLE_RATE, seconds=settings["continue_seconds"], seed=seed + number,
            temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
            decode_steps=int(settings["decode_steps"]), sampler=settings["sampler"],
        )
        return [row_audio[0] for row_audio in audio]

    return pipeline.write_in_batches(rows, out_dir, int(settings["batch_size"]), make, "generate")


def measure_continuations(manifest: Path, rows: list[dict[str, Any]], paths: list[Path],
                          reconstructions: list[Path], settings: dict[str, Any], probe) -> list[dict[str, Any]]:
    """Per clip: its stated properties, measured on the prompt (original audio), on the continuation and
    on the codec's reconstruction of the prompt."""
    prompt_samples = int(round(settings["prompt_seconds"] * SAMPLE_RATE))
    new_samples = int(round(settings["continue_seconds"] * SAMPLE_RATE))
    measured = []
    for row, path, reconstruction in zip(rows, paths, reconstructions):
        names = list(stated_properties(row))
        generated = soundfile.read(path, dtype="float32")[0]
        prompt = pipeline.clip_audio(manifest, row)[:prompt_samples]
        measured.append({"id": row["id"], "kind": row["params"]["kind"], "stated": stated_properties(row),
                         "prompt": measure(prompt, names, probe),
                         "continuation": measure(generated[-new_samples:], names, probe),
                         "reconstruction": measure(soundfile.read(reconstruction, dtype="float32")[0], names, probe),
                         "wav": str(path)})
    return measured


def keep_rates(measured: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per property: (kept, clips) for the continuations, (matches, pairs) for mismatched pairs (chance), and
    (kept, clips) for the codec reconstructions of the prompts (the ceiling through this codec)."""
    table = {}
    for name in ("pitch", "tempo", "colour", "class"):
        clips = [m for m in measured if name in m["stated"]]
        if not clips:
            continue
        kept = sum(matches(name, m["prompt"][name], m["continuation"][name]) for m in clips)
        pairs = [(a, b) for a in clips for b in clips if a is not b]
        chance = sum(matches(name, a["prompt"][name], b["continuation"][name]) for a, b in pairs)
        rebuilt = sum(matches(name, m["prompt"][name], m["reconstruction"][name]) for m in clips)
        table[name] = {"continuation keeps it": (kept, len(clips)), "chance (other clip)": (chance, len(pairs)),
                       "codec reconstruction keeps it": (rebuilt, len(clips))}
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the results (also written to ``<run_dir>/results.json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (recipes/continuation/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    config = load_recipe_config(args.config, args.overrides, pipeline.RECIPE_KEYS)
    settings = {**EVALUATE_DEFAULTS, **(config.get("evaluate") or {})}
    seed = int(config.get("seed", 0))
    run_dir = Path(config.get("run_dir", "runs/continuation"))
    run_dir.mkdir(parents=True, exist_ok=True)

    manifest, tokenize_report, model_dir, train_summary, validation, timings = pipeline.tokenize_and_train(
        config, run_dir, STEPS, with_text=False)

    started = time.monotonic()
    generator = AudioGenerator.from_pretrained(model_dir)
    rows = choose_prompts(manifest, settings)
    if not rows:
        raise SystemExit(f"{manifest}: no {settings['split']} clip of the synthetic world lasts "
                         f"{settings['prompt_seconds']} s; shorten evaluate.prompt_seconds")
    made_with = {"model": train_summary.get("parameters"), "codec": pipeline.weights_digest(generator.codec),
                 "seed": seed, "settings": settings, "clips": [row["id"] for row in rows]}
    samples = pipeline.samples_folder(run_dir / "samples", made_with)
    paths = generate_continuations(generator, manifest, rows, settings, samples, seed)
    timings["generate"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    reconstructions = pipeline.reconstruct_clips(generator.codec, manifest, rows, settings["prompt_seconds"],
                                                 settings, samples / "reconstruction", seed)
    timings["reconstruct"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    probe = pipeline.fit_kind_probe(Path(tokenize_report["manifest"]), int(settings["probe_clips"]), seed)
    measured = measure_continuations(manifest, rows, paths, reconstructions, settings, probe)
    rates = keep_rates(measured)
    timings["measure"] = round(time.monotonic() - started, 1)

    table = fraction_table("Property", ["continuation keeps it", "chance (other clip)",
                                        "codec reconstruction keeps it"], rates)
    markdown = (
        f"# Continuation: {settings['prompt_seconds']:g}-s prompts + {settings['continue_seconds']:g} s\n\n"
        f"LM `{model_dir}` ({train_summary.get('global_step', '?')} steps), codec `{tokenize_report['codec']}`, "
        f"{len(rows)} {settings['split']} prompts of the synthetic world, temperature {settings['temperature']}, "
        f"top-k {settings['top_k']}, top-p {settings['top_p']}, {settings['decode_steps']} decoder steps "
        f"({settings['sampler']}).\n\n"
        f"Validation: loss {validation['valid_loss']}, perplexity {validation['valid_perplexity']} "
        f"({validation['valid_clips']} clips).\n\n" + table +
        "\nTime (s): " + ", ".join(f"{step} {seconds:g}" for step, seconds in timings.items()) + "\n"
    )
    results = {"validation": validation,
               "keep_rates": {name: {column: list(cell) for column, cell in cells.items()}
                              for name, cells in rates.items()},
               "clips": measured, "settings": settings, "train": train_summary, "timings_seconds": timings,
               "tokenize": {key: tokenize_report.get(key) for key in ("clips", "audio_seconds", "this_run", "codec")}}
    pipeline.write_results(run_dir, results, markdown)
    kept = {f"keep_{name}": hits / total for name, cells in rates.items()
            for hits, total in [cells["continuation keeps it"]] if total}
    metrics = {**validation, **kept}
    log_to_wandb(config, run_dir / "train", metrics, {"continuation": markdown})
    print(markdown, flush=True)
    return results


if __name__ == "__main__":
    main()
