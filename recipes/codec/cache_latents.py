"""What a latent-prior step reads, computed once: each 10.24-s crop's tokens and its scaled VAE latent.

    python recipes/codec/cache_latents.py --codec default --manifest data/corpus/manifest.jsonl \
        --out runs/codec-small/latent-cache --pitched 900

A prior-only step of ``train_ldm.py`` (``model.train_unet=false``) spends most of its time in frozen
models whose outputs never change: the VAE encoder making the target latent (about 80 % of a step on
one thread of an AMD EPYC with ``avx512_bf16``) and the AudioMAE and BiLSTM making the tokens. This
recipe runs them once per clip and writes, per split, shards of ``tokens`` int32 [N, tokens, 2]
(semantic, acoustic: the codec's own ``encode`` of the crop), ``length`` int64 [N] (samples before the
zero padding) and ``latents`` float16 [N, C, T, F] (the VAE posterior mean times ``scale_factor``, the
prior's target). ``train_ldm.py data.latent_cache=<out>`` then trains the prior on them. Crops start at
the clip's beginning (every corpus clip is at most 10 s, so a crop is the whole clip); ``--pitched N``
adds N crops of random notes (the recipe's ``pitched_share``, drawn once from ``--seed``) to ``train``.

``cache.json`` records what the shards depend on (the codec's ``tokens_digest`` and a digest of its VAE
encoder and ``scale_factor``); a cache made by another codec is refused. Shards are written atomically
and skipped when present, so a killed run resumes where it stopped; clips that cannot be read are
reported and left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from codec.acoustic import mask_padding_rows
from codec.config import SAMPLE_RATE, SEGMENT_SAMPLES, CodecConfig
from codec.files import atomic_path
from codec.frontend import token_budget
from codec.model import PRECISIONS, SemantiCodec
from codec.vae import AutoencoderKL
from recipes.codec.train_vae import crop_mel
from semanticodec_lm.corpus.datasets import ManifestDataset, ManifestError
from semanticodec_lm.training.codec_stages import full_precision, rank_loader, segment_fbank
from semanticodec_lm.training.pitched_audio import random_pitched_audio

CACHE_FORMAT = "semanticodec-latent-cache"
CACHE_VERSION = 1
IDENTITY_FILE = "cache.json"
PITCHED_PREFIX = "pitched"


def latents_digest(codec: SemantiCodec) -> str:
    """16 hex digits of SHA-256 over the VAE encoder's weights and ``scale_factor``: what fixes the latent
    space a cached target lives in."""
    first_stage = codec.decoder.first_stage_model
    digest = hashlib.sha256()
    for prefix, module in (("encoder.", first_stage.encoder), ("quant_conv.", first_stage.quant_conv)):
        for key, value in sorted(module.state_dict().items()):
            digest.update((prefix + key).encode())
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(codec.decoder.scale_factor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_identity(codec: SemantiCodec, latent_precision: str) -> dict:
    """What a cache's shards depend on; two caches with equal identities hold interchangeable shards."""
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "codec_config": codec.config.name,
            "tokens_digest": codec.tokens_digest(), "latents_digest": latents_digest(codec),
            "latent_precision": latent_precision}


def vae_posterior(vae: AutoencoderKL, mel: torch.Tensor, latent_precision: str):
    """The VAE encoder's posterior of log-mel [B, 1, frames, 64] (latents [B, C, frames/4, 16], unscaled).

    ``bf16``: the encoder under bf16 autocast, channels-last (several times faster on CPUs with bf16
    units; means within 0.5 % RMS of float32); ``fp32``: exact."""
    if latent_precision not in PRECISIONS:
        raise ValueError(f"latent_precision must be one of {', '.join(PRECISIONS)}, got {latent_precision!r}")
    if latent_precision == "bf16":
        with torch.autocast(mel.device.type, dtype=torch.bfloat16):
            return vae.encode(mel.contiguous(memory_format=torch.channels_last))
    with full_precision(mel.device):
        return vae.encode(mel)


@torch.no_grad()
def cache_batch(codec: SemantiCodec, audio: torch.Tensor, length: torch.Tensor, latent_precision: str
                ) -> dict[str, torch.Tensor]:
    """10.24-s crops float32 [B, 163840] (zero-padded past ``length`` [B]) -> the shard tensors of B crops."""
    with full_precision(audio.device):
        tokens = codec.encoder.encode_segments(segment_fbank(audio))
    first_stage = codec.decoder.first_stage_model
    posterior = vae_posterior(first_stage, crop_mel(audio.float(), first_stage.downsampling), latent_precision)
    with full_precision(audio.device):
        means = posterior.mode().float()
    return {"tokens": tokens.to(torch.int32), "length": length.to(torch.int64),
            "latents": (means * codec.decoder.scale_factor).to(torch.float16)}


def _shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.safetensors"


def _write_shard(path: Path, parts: list[dict[str, torch.Tensor]], ids: list[str]) -> None:
    """Write the batches ``parts`` (of :func:`cache_batch`) as one shard, atomically."""
    tensors = {key: torch.cat([part[key] for part in parts]).contiguous() for key in parts[0]}
    with atomic_path(path, suffix=".safetensors") as temporary:
        save_file(tensors, str(temporary), metadata={"ids": json.dumps(ids)})


def check_identity(out: Path, identity: dict) -> None:
    """Write ``cache.json`` in a new cache; in an existing one, SystemExit unless it records ``identity``."""
    path = out / IDENTITY_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != identity:
            changed = sorted(key for key in identity if recorded.get(key) != identity[key])
            raise SystemExit(f"{out}: a latent cache of another codec or precision ({', '.join(changed)} differ); "
                             "use a new --out")
        return
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(identity, indent=2) + "\n")


def _clip_batches(dataset: ManifestDataset, first: int, count: int, batch_size: int, skipped: list[str]
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """The readable clips of dataset[first: first + count] in batches; unreadable ones go to ``skipped``."""
    examples = []
    for index in range(first, min(first + count, len(dataset))):
        try:
            examples.append(dataset[index])
        except ManifestError as error:
            skipped.append(str(error))
            print(f"skipped: {error}", flush=True)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        yield (torch.stack([example["audio"] for example in chunk]),
               torch.stack([example["length"] for example in chunk]), [example["id"] for example in chunk])


def build_latent_cache(codec: SemantiCodec, manifest: str | os.PathLike, out: str | os.PathLike, *,
                       splits: tuple[str, ...] = ("train", "valid"), pitched: int = 0, seed: int = 0,
                       batch_size: int = 8, shard_size: int = 256, latent_precision: str = "bf16") -> dict:
    """Write (or complete) the cache of ``splits`` in ``out``; returns {split: clips in it, "pitched": N,
    "skipped": [the unreadable clips' errors]}.

    Shard k of a split holds its clips k*shard_size onwards in manifest order, so a rerun recomputes only
    the missing shards; ``pitched`` note crops go to ``train`` shards of their own (``pitched-*``)."""
    if shard_size < 1 or batch_size < 1 or pitched < 0:
        raise ValueError(f"shard_size and batch_size must be >= 1 and pitched >= 0, got {shard_size}, "
                         f"{batch_size}, {pitched}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_identity(out, cache_identity(codec, latent_precision))
    codec.eval()
    summary: dict = {"skipped": []}
    for split in splits:
        dataset = ManifestDataset(manifest, splits=[split], segment_seconds=SEGMENT_SAMPLES / SAMPLE_RATE,
                                  random_crop=False)
        shards = range(0, len(dataset), shard_size)
        for shard, first in enumerate(tqdm(shards, desc=f"cache {split}", unit="shard")):
            path = out / _shard_name(split, shard)
            if path.exists():
                continue
            parts, ids = [], []
            for audio, length, names in _clip_batches(dataset, first, shard_size, batch_size, summary["skipped"]):
                parts.append(cache_batch(codec, audio, length, latent_precision))
                ids += names
            if parts:
                _write_shard(path, parts, ids)
        summary[split] = len(dataset)
    if pitched:
        generator = torch.Generator().manual_seed(seed)
        for shard, first in enumerate(tqdm(range(0, pitched, shard_size), desc="cache pitched", unit="shard")):
            count = min(shard_size, pitched - first)
            # Drawn even for a shard already written, so that every shard's notes are those of a fresh run.
            audio = random_pitched_audio(count, SEGMENT_SAMPLES, generator)
            path = out / _shard_name(f"train-{PITCHED_PREFIX}", shard)
            if path.exists():
                continue
            length = torch.full((count,), SEGMENT_SAMPLES, dtype=torch.int64)
            parts = [cache_batch(codec, audio[i:i + batch_size], length[i:i + batch_size], latent_precision)
                     for i in range(0, count, batch_size)]
            _write_shard(path, parts, [f"{PITCHED_PREFIX}-{first + i}" for i in range(count)])
        summary["pitched"] = pitched
    return summary


# Reading -----------------------------------------------------------------------------------------
class LatentCacheDataset(torch.utils.data.Dataset):
    """The cached crops of one split, in memory: items ``tokens`` int64 [tokens, 2], ``length`` int64 [],
    ``latents`` float32 [C, T, F]. ``train`` includes the pitched crops. Keys may be ``(index, epoch)``."""

    def __init__(self, folder: str | os.PathLike, split: str, codec: SemantiCodec | None = None) -> None:
        folder = Path(folder)
        if not (folder / IDENTITY_FILE).is_file():
            raise SystemExit(f"{folder}: not a latent cache (no {IDENTITY_FILE}); make one with "
                             "recipes/codec/cache_latents.py")
        identity = json.loads((folder / IDENTITY_FILE).read_text())
        if codec is not None and identity.get("tokens_digest") != codec.tokens_digest():
            raise SystemExit(f"{folder}: cached with tokens_digest {identity.get('tokens_digest')}, the codec's is "
                             f"{codec.tokens_digest()}: its tokens mean something else here")
        if codec is not None and identity.get("latents_digest") != latents_digest(codec):
            raise SystemExit(f"{folder}: cached in another latent space (latents_digest {identity.get('latents_digest')}, "
                             f"the codec's {latents_digest(codec)})")
        paths = sorted(folder.glob(f"{split}-[0-9]*.safetensors"))
        if split == "train":
            paths += sorted(folder.glob(f"train-{PITCHED_PREFIX}-[0-9]*.safetensors"))
        if not paths:
            raise SystemExit(f"{folder}: no {split!r} shards")
        columns: dict[str, list[torch.Tensor]] = {"tokens": [], "length": [], "latents": []}
        for path in paths:
            with safe_open(str(path), framework="pt") as shard:
                for key in columns:
                    columns[key].append(shard.get_tensor(key))
        self.tokens = torch.cat(columns["tokens"]).long()
        self.length = torch.cat(columns["length"])
        self.latents = torch.cat(columns["latents"])

    def __len__(self) -> int:
        return len(self.length)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index = key[0] if isinstance(key, tuple) else key
        return {"tokens": self.tokens[index], "length": self.length[index], "latents": self.latents[index].float()}


class LatentCacheDataModule(L.LightningDataModule):
    """Batches of a latent cache (``train`` shuffled per epoch, ``valid`` in order) for ``train_ldm.py``'s
    prior-only training: dicts of ``tokens`` [B, tokens, 2], ``length`` [B], ``latents`` [B, C, T, F]."""

    batch_key = "tokens"  # what the run summary hashes to name the first batch

    def __init__(self, latent_cache: str | os.PathLike, batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        self.folder, self.batch_size, self.num_workers, self.seed = Path(latent_cache), batch_size, num_workers, seed
        self.codec: SemantiCodec | None = None

    def check_codec(self, codec: SemantiCodec) -> None:
        """Check the shards against ``codec`` when the loaders load them: SystemExit where the cache was made by a
        codec whose tokens or latent space differ."""
        self.codec = codec

    def _loader(self, split: str, train: bool) -> DataLoader:
        return rank_loader(self, LatentCacheDataset(self.folder, split, self.codec), train,
                           f"{self.folder}: {split!r} crops")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)


def cached_window_features(codec: SemantiCodec, tokens: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Cached tokens [B, tokens, 2] and lengths [B] -> decoder window features [B, tokens, 2F]: the token
    rows past each crop's budget at -1, as ``SemantiCodec.decode`` builds them."""
    return mask_padding_rows(codec.encoder.tokens_to_features(tokens), token_budgets(codec.config, length))


def token_budgets(config: CodecConfig, length: torch.Tensor) -> torch.Tensor:
    """Crop lengths in samples [B] -> how many of a window's token rows each crop fills, int64 [B]."""
    return torch.tensor([min(config.tokens_per_segment, token_budget(int(n), config.concat_factor)[1])
                         for n in length], device=length.device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="default", help="codec folder or shipped name (default: %(default)s)")
    parser.add_argument("--manifest", required=True, help="corpus manifest.jsonl")
    parser.add_argument("--out", required=True, help="cache folder (resumed when it exists)")
    parser.add_argument("--splits", default="train,valid", help="comma-separated (default: %(default)s)")
    parser.add_argument("--pitched", type=int, default=0, help="crops of random notes added to train")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pitched crops")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--latent-precision", choices=PRECISIONS, default="bf16",
                        help="the VAE encoder's precision (default: %(default)s, as train_ldm's latent_precision)")
    args = parser.parse_args(argv)
    if not Path(args.manifest).is_file():
        raise SystemExit(f"{args.manifest}: no such manifest")
    try:
        codec = SemantiCodec.from_pretrained(args.codec)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--codec {args.codec}: {error}") from None
    summary = build_latent_cache(codec, args.manifest, args.out, splits=tuple(args.splits.split(",")),
                                 pitched=args.pitched, seed=args.seed, batch_size=args.batch_size,
                                 shard_size=args.shard_size, latent_precision=args.latent_precision)
    print(json.dumps({key: value for key, value in summary.items() if key != "skipped"})
          + f"; {len(summary['skipped'])} clip(s) skipped")
    return summary


if __name__ == "__main__":
    main()
