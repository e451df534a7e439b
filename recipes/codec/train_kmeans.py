"""Stage b: fit the k-means semantic codebook on AudioMAE features, for one token rate.

    python recipes/codec/train_kmeans.py --config recipes/codec/configs/kmeans_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/kmeans \
        model.audiomae=runs/codec-small/audiomae

Each step encodes a batch of 10.24-s ``train`` crops with the frozen AudioMAE (weights from stage
a), joins patches K at a time as the codec does (``concat_patches``), drops the silent padding rows
and makes one mini-batch k-means update (``codec/training/kmeans.py``). ``model.domain_sizes``
(e.g. ``{sfx: 512, speech: 256, music: 256}``) fits one codebook per domain and concatenates them,
as the paper does; by default one codebook covers all domains. ``model.center_positions: true``
first measures the mean feature at each token position of a segment over the initialisation batches
and fits the codebook on the features minus it (``codec.semantic.SemanticCodebook.position_mean``,
carried in the weights; a small AudioMAE's features are mostly their patch's position). Writes the official layout
``<run_dir>/codebook_idx/combine_{512|256|128}_audioset_dominate/codebook_{V/2}_0.npy`` and
``<run_dir>/weights.safetensors`` (``encoder.semantic_codebook.centroids``).

Lightning counts steps by optimizer steps; k-means has no gradient, so a one-element placeholder
parameter is stepped by a no-op SGD (lr 0) once per batch: ``max_steps``, checkpoint intervals and
resumption then work as in the other stages, and DDP has a parameter to wrap.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from codec.acoustic import silence_cutoff_rows
from codec.semantic import AudioMAE, concat_patches, tokens_per_time_step
from semanticodec_lm.training.codec_stages import (
    StageModule,
    load_into,
    model_kwargs,
    parse_args,
    read_weights,
    run_stage,
    segment_fbank,
)
from codec.training.kmeans import MiniBatchKMeans, write_codebook
from semanticodec_lm.corpus.manifest import DOMAINS


class KMeansModule(StageModule):
    """Fits ``codec``'s semantic codebook; ``audiomae``: a stage-a run folder or weights file (None: a
    freshly initialised AudioMAE, for smoke tests only)."""

    stage = "kmeans"

    def __init__(self, codec: str, seed: int = 0, audiomae: str | None = None,
                 domain_sizes: dict[str, int] | None = None, init_batches: int = 1, reseed_after: int = 20,
                 center_positions: bool = False,
                 lr: float = 0.0, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 warmup_steps: int = 0, min_lr_ratio: float = 1.0) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        self.automatic_optimization = False
        config = self.codec_config
        self.audiomae = AudioMAE(config.audiomae).requires_grad_(False).eval()
        if audiomae is not None:
            load_into(self.audiomae, "encoder.audiomae.", read_weights(audiomae, config, "audiomae"), str(audiomae))
        self.block_names = list(domain_sizes) if domain_sizes else [None]
        sizes = list(domain_sizes.values()) if domain_sizes else [config.semantic_vocab_size]
        unknown = sorted(set(domain_sizes or ()) - set(DOMAINS))
        if unknown or sum(sizes) != config.semantic_vocab_size:
            raise SystemExit(f"model.domain_sizes {domain_sizes} must name domains of {DOMAINS} and sum to the "
                             f"semantic vocabulary size {config.semantic_vocab_size}")
        self.kmeans = MiniBatchKMeans(sizes, config.feature_dim, reseed_after)
        # Set from the initialisation batches when center_positions; zero (no centring) until then.
        self.register_buffer("position_mean", torch.zeros(config.tokens_per_segment, config.feature_dim))
        self.placeholder = torch.nn.Parameter(torch.zeros(1))
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.audiomae.eval()
        return self

    def configure_optimizers(self):
        return torch.optim.SGD([self.placeholder], lr=0.0)

    @torch.no_grad()
    def features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch -> (rows [B*T, F] minus ``position_mean``, block index int64 [B*T], -1 for silent padding rows)."""
        config = self.codec_config
        fbank = segment_fbank(batch["audio"])
        rows = concat_patches(self.audiomae(fbank), config.concat_factor) - self.position_mean
        cutoff = silence_cutoff_rows(fbank, config.tokens_per_segment)
        valid = torch.arange(rows.shape[1], device=rows.device)[None, :] < cutoff[:, None]
        if self.block_names == [None]:
            blocks = torch.zeros(len(batch["domain"]), dtype=torch.long, device=rows.device)
        else:
            blocks = torch.tensor([self.block_names.index(d) if d in self.block_names else -1
                                   for d in batch["domain"]], device=rows.device)
        blocks = torch.where(valid, blocks[:, None], -1)
        return rows.reshape(-1, rows.shape[-1]).float(), blocks.reshape(-1)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            return tensor
        return self.all_gather(tensor).flatten(0, 1)

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(tensor)
        return tensor

    def kmeans_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Collect rows until ``init_batches`` batches are in (then k-means++), else one update."""
        rows, blocks = self.features(batch)
        generator = self.step_generator(torch.device("cpu"), per_rank=False)
        if not self.kmeans.initialised:
            self.pending.append((self.gather(rows), self.gather(blocks)))
            if len(self.pending) >= self.hparams.init_batches:
                points, point_blocks = (torch.cat(parts) for parts in zip(*self.pending))
                if self.hparams.center_positions:
                    points = points - self.estimate_position_mean(points, point_blocks)
                try:
                    self.kmeans.initialise(points, point_blocks, generator)
                except ValueError as error:
                    raise SystemExit(f"k-means++ initialisation: {error} (raise model.init_batches)") from None
                self.pending.clear()
            return {}
        keep = blocks >= 0
        return self.kmeans.update(rows[keep], blocks[keep], generator, self.reduce)

    def estimate_position_mean(self, points: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """Set ``position_mean`` [T, F] to the mean of the non-padding rows at each token position of
        the initialisation batches (rows [N*T, F] in segment order); returns it repeated over the rows.

        A position that only ever held padding (clips shorter than a segment) takes the mean of all
        rows at its frequency position."""
        positions = self.position_mean.shape[0]
        rows = points.reshape(-1, positions, points.shape[-1])
        kept = (blocks >= 0).reshape(-1, positions, 1).to(rows.dtype)
        if not bool(kept.any()):
            raise SystemExit("model.center_positions: the initialisation batches hold no rows to measure")
        sums, counts = (rows * kept).sum(dim=0), kept.sum(dim=0)
        per_time_step = tokens_per_time_step(self.codec_config.concat_factor)
        by_frequency = (sums.reshape(-1, per_time_step, sums.shape[-1]).sum(dim=0)
                        / counts.reshape(-1, per_time_step, 1).sum(dim=0).clamp(min=1))
        fallback = by_frequency.repeat(positions // per_time_step, 1)
        self.position_mean.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), fallback))
        return self.position_mean.repeat(rows.shape[0], 1)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        logs = self.kmeans_step(batch)
        self.optimizers().step()
        if logs:
            self.log_all("train", logs.pop("inertia"), logs, batch["audio"].shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.kmeans.initialised:
            rows, blocks = self.features(batch)
            keep = blocks >= 0
            _, distance = self.kmeans.assign(rows[keep], blocks[keep])
            self.log("valid/loss", distance.mean(), sync_dist=True, batch_size=batch["audio"].shape[0])

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            write_codebook(Path(self.trainer.default_root_dir), self.kmeans.centroids, self.codec_config)

    def export_weights(self) -> dict[str, torch.Tensor]:
        if not self.kmeans.initialised:
            raise SystemExit("k-means never initialised: train for more than model.init_batches steps")
        weights = {"encoder.semantic_codebook.centroids": self.kmeans.centroids.detach().cpu().clone()}
        if self.hparams.center_positions:
            weights["encoder.semantic_codebook.position_mean"] = self.position_mean.detach().cpu().clone()
        return weights


def main(argv: list[str] | None = None) -> dict:
    """Run stage b; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    return run_stage(config, lambda values, seed: KMeansModule(**model_kwargs(values, KMeansModule, seed)))


if __name__ == "__main__":
    main()
