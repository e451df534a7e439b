"""Assemble the five stage outputs into one SemantiCodec and save it (``config.json`` + ``model.safetensors``).

    python recipes/codec/export.py --codec small-100 --runs runs/codec-small --out codec/pretrained/default

Reads ``<runs>/{audiomae,kmeans,ldm,vae,vocoder}/weights.safetensors`` (or the files given with
``--audiomae`` etc.), checks that each came from its stage for this codec config and that together
they cover every weight of the codec exactly once, loads them strictly, and writes the folder that
``SemantiCodec.from_pretrained(<folder or name under codec/pretrained>)`` loads. Fails when
``model.safetensors`` is larger than ``--max-mb`` (10^6 bytes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from codec.checkpoints import load_state
from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.common import read_weights

STAGES = ("audiomae", "kmeans", "ldm", "vae", "vocoder")


def assemble(codec_name: str, sources: dict[str, str | os.PathLike]) -> SemantiCodec:
    """A codec of config ``codec_name`` from stage weights ``{stage: run folder or weights file}``."""
    config = get_config(codec_name)
    missing = [stage for stage in STAGES if stage not in sources]
    if missing:
        raise SystemExit(f"no weights given for stage(s) {missing}")
    state: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    for stage in STAGES:
        for key, value in read_weights(sources[stage], config, stage).items():
            if key in state:
                raise SystemExit(f"{sources[stage]}: weight {key!r} already comes from stage {owner[key]!r}")
            state[key], owner[key] = value, stage
    codec = SemantiCodec(config)
    load_state(codec, state, f"stage weights {sorted(set(map(str, sources.values())))}")
    return codec.eval()


def export(codec_name: str, sources: dict[str, str | os.PathLike], out: str | os.PathLike,
           max_mb: float | None = None) -> Path:
    """Assemble, save to ``out`` and check the size budget; returns the folder."""
    folder = assemble(codec_name, sources).save_pretrained(out)
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
    parser.add_argument("--max-mb", type=float, default=60.0, help="size budget of model.safetensors (0: none)")
    args = parser.parse_args(argv)
    sources = {}
    for stage in STAGES:
        given = getattr(args, stage)
        if given is None and args.runs is None:
            raise SystemExit(f"give --runs or --{stage}")
        sources[stage] = given if given is not None else str(Path(args.runs) / stage)
    return export(args.codec, sources, args.out, args.max_mb or None)


if __name__ == "__main__":
    main()
