"""Assemble the five stage outputs into one SemantiCodec and save it (``config.json`` + ``model.safetensors``).

    python recipes/codec/export.py --codec small-100 --runs runs/codec-small --out codec/pretrained/default

    python recipes/codec/export.py --codec small-100 --base default --vocoder runs/codec-small/vocoder \
        --out /tmp/new-default

Reads ``<runs>/{audiomae,kmeans,ldm,vae,vocoder}/weights.safetensors`` (or the files given with
``--audiomae`` etc.), checks that each came from its stage for this codec config and that together
they cover every weight of the codec exactly once, loads them strictly, and writes the folder that
``SemantiCodec.from_pretrained(<folder or name under codec/pretrained>)`` loads. Fails when
``model.safetensors`` is larger than ``--max-mb`` (10^6 bytes). With ``--base CODEC`` (a shipped
name or folder) the stages not given are taken from that codec, whose config may differ from
``--codec`` only in the sections of the stages given (a new vocoder on the shipped encoder, VAE
and LDM, say): training accumulates from the shipped default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from codec.checkpoints import load_state
from codec.config import get_config
from codec.model import SemantiCodec
from semanticodec_lm.training.codec_stages import read_weights

STAGES = ("audiomae", "kmeans", "ldm", "vae", "vocoder")
# Which SemantiCodec weights and config entries each stage owns (the LDM owns every other weight).
STAGE_PREFIXES = {"audiomae": ("encoder.audiomae.",), "kmeans": ("encoder.semantic_codebook.",),
                  "vae": tuple(f"decoder.first_stage_model.{part}." for part in ("encoder", "decoder", "quant_conv",
                                                                                "post_quant_conv")),
                  "vocoder": ("decoder.first_stage_model.vocoder.",)}
STAGE_CONFIG_KEYS = {"audiomae": ("audiomae",), "kmeans": ("semantic_vocab_size",), "vae": ("vae",),
                     "vocoder": ("vocoder",), "ldm": ("unet", "diffusion", "lstm_layers", "acoustic_vocab_size", "acoustic_input")}


def stage_of(key: str) -> str:
    """The training stage that owns a SemantiCodec weight."""
    return next((stage for stage, prefixes in STAGE_PREFIXES.items() if key.startswith(prefixes)), "ldm")


def base_weights(base: str, config, stages: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """{stage: weights} of ``stages`` taken from the codec ``base``, whose config may differ from
    ``config`` only where the other (replaced) stages own it."""
    codec = SemantiCodec.from_pretrained(base)
    replaced = [stage for stage in STAGES if stage not in stages]
    allowed = {"name"} | {key for stage in replaced for key in STAGE_CONFIG_KEYS[stage]}
    theirs, ours = codec.config.to_dict(), config.to_dict()
    differing = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key) and key not in allowed)
    if differing:
        raise SystemExit(f"--base {base}: its config differs from {config.name!r} in {', '.join(differing)}, "
                         f"which stages {stages} own; train those stages too")
    weights: dict[str, dict[str, torch.Tensor]] = {stage: {} for stage in stages}
    for key, value in codec.state_dict().items():
        if stage_of(key) in weights:
            weights[stage_of(key)][key] = value
    return weights


def assemble(codec_name: str, sources: dict[str, str | os.PathLike], base: str | None = None) -> SemantiCodec:
    """A codec of config ``codec_name`` from stage weights ``{stage: run folder or weights file}``; the
    stages not given come from the codec ``base`` (shipped name or folder) when one is named."""
    config = get_config(codec_name)
    missing = [stage for stage in STAGES if stage not in sources]
    if missing and base is None:
        raise SystemExit(f"no weights given for stage(s) {missing}")
    stage_weights = base_weights(base, config, missing) if missing else {}
    for stage, source in sources.items():
        stage_weights[stage] = read_weights(source, config, stage)
    state: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    for stage in STAGES:
        for key, value in stage_weights[stage].items():
            if key in state:
                raise SystemExit(f"{sources.get(stage, base)}: weight {key!r} already comes from stage {owner[key]!r}")
            state[key], owner[key] = value, stage
    codec = SemantiCodec(config)
    load_state(codec, state, f"stage weights {sorted(set(map(str, sources.values())) | ({base} if missing else set()))}")
    return codec.eval()


def export(codec_name: str, sources: dict[str, str | os.PathLike], out: str | os.PathLike,
           max_mb: float | None = None, base: str | None = None) -> Path:
    """Assemble, save to ``out`` and check the size budget; returns the folder."""
    folder = assemble(codec_name, sources, base).save_pretrained(out)
    size = (folder / "model.safetensors").stat().st_size
    if max_mb is not None and size > max_mb * 1e6:
        raise SystemExit(f"{folder / 'model.safetensors'}: {size / 1e6:.1f} MB, over the {max_mb} MB budget")
    print(f"exported {codec_name} to {folder} ({size / 1e6:.1f} MB)", flush=True)
    return folder


def main(argv: list[str] | None = None) -> Path:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", required=True, help="codec config name (codec/config.py), e.g. small-100")
    parser.add_argument("--runs", help="folder holding one run folder per stage (audiomae, kmeans, ldm, vae, vocoder)")
    for stage in STAGES:
        parser.add_argument(f"--{stage}", help=f"run folder or weights file of stage {stage} (default <runs>/{stage})")
    parser.add_argument("--out", required=True, help="output folder (codec/pretrained/<name> ships with the package)")
    parser.add_argument("--base", help="codec (shipped name or folder) whose weights fill the stages not given")
    parser.add_argument("--max-mb", type=float, default=60.0, help="size budget of model.safetensors (0: none)")
    args = parser.parse_args(argv)
    sources = {}
    for stage in STAGES:
        given = getattr(args, stage)
        if given is None and args.runs is None:
            if args.base is None:
                raise SystemExit(f"give --runs, --base or --{stage}")
            continue
        sources[stage] = given if given is not None else str(Path(args.runs) / stage)
    return export(args.codec, sources, args.out, args.max_mb or None, args.base)


if __name__ == "__main__":
    main()
