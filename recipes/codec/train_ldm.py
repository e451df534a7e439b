"""Stage c: the acoustic encoder (BiLSTM + projection + EMA VQ) and the latent-diffusion UNet, jointly.

    python recipes/codec/train_ldm.py --config recipes/codec/configs/ldm_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/ldm \
        model.audiomae=runs/codec-small/audiomae model.kmeans=runs/codec-small/kmeans model.vae=runs/codec-small/vae

For each 10.24-s ``train`` crop: the frozen AudioMAE and k-means give features and semantic
centroids; the BiLSTM reads [feature | centroid] (silent padding rows at -1) and its projection is
quantised by the EMA codebook (``codec/training/vq.py``, straight-through gradient, commitment loss).
The decoder conditioning is [quantised acoustic | centroid] for the clip's token budget and -1
after it, exactly as ``SemantiCodec.decode`` builds it; with probability ``cfg_dropout`` it is
replaced by the unconditional context (zeros, then the positions). The frozen VAE encodes the
64-bin log-mel; its latent sample times ``scale_factor`` is the diffusion target (``latent_precision``:
``bf16`` runs that frozen encoder under bf16 autocast, channels-last: about 5x faster than float32 on
an AMX CPU, where it was half of a step, with latent means within 0.5 % RMS of the float32 ones, far
inside the posterior's own sampling noise; ``fp32`` is exact). ``scale_factor``
is set once, on the first training batch, to 1 / std of the latents (the official scale_by_std;
averaged over ranks). Loss: MSE of the UNet's v-prediction, weighted per sample by min-SNR-γ
(``min_snr_gamma``: min(SNR, γ) / (SNR + 1), 0 for the plain MSE), + ``commitment_weight`` x commitment.
``ema_decay`` > 0 keeps an exponential moving average of the UNet, which is what gets exported.
``latent_head_weight`` > 0 adds that weight x the MSE of an estimate of the scaled latent (posterior
mean) made straight from the conditioning (before dropout). With a UNet that has a latent prior
(``UNetConfig.latent_prior_width``, the small configs) the estimate is the prior's, which the UNet
reads as input and which ships with it: the loss keeps it a latent estimate. Otherwise (and only with
``train_encoder``) a training-only head makes it and is not exported. Either way the estimate teaches
the acoustic encoder: the diffusion loss alone reaches it too weakly for it to learn what the
semantic tokens miss (a frozen encoder after 800 such steps gave notes of 110 to 262 Hz one acoustic
code on about half their frames), while a direct reconstruction pulls pitch and timbre into the codes.
``pitched_share`` > 0 replaces that share of the training crops (never validation's) by crops of random
notes at any pitch from 55 to 1 760 Hz (``semanticodec_lm/training/pitched_audio.py``): the corpus
holds few held notes, and a decoder trained on it alone renders many at a neighbouring pitch.
The codec config's ``acoustic_input`` says what the BiLSTM reads beside the centroids: the AudioMAE
features (official) or, for the ``small-fbank-*`` configs, a projection of each token's own fbank
patch (``codec.acoustic.fbank_patches``); ``init_from`` a codec with the other input keeps every
weight but that input's own and needs ``train_encoder``.
``init_from`` (a codec folder or shipped name, e.g. ``default``) starts from that whole codec
instead of the stage folders (a codec whose UNet has no latent prior gains one: its first
convolution's new input channels start at zero, so the UNet starts computing what it did);
``train_encoder: false`` then keeps its acoustic encoder and VQ frozen, so the tokens (and any LM
trained on them) stay valid while the UNet improves. ``train_unet: false`` (with a latent prior,
``latent_head_weight`` > 0 and a frozen encoder) trains the latent prior alone, with no diffusion loss
and no UNet pass: a step costs the frozen encoders and the prior only, so the prior, which the
``prior`` sampler decodes directly, gets many more steps per CPU-hour. A config whose prior has more
residual blocks (``UNetConfig.latent_prior_blocks``) than ``init_from``'s grows them, each starting
as the identity. ``prior_mel_weight`` > 0 adds that weight x the L1 between the log-mel the frozen
VAE decoder makes of a random ``prior_mel_frames``-frame span of the prior's estimate and the input's
log-mel there: the prior is then judged by the spectrogram it gives, not by latent units alike. With
``init_from``, ``audiomae``, ``kmeans`` and ``vae`` may still name new stage runs: they replace the
codec's own (new semantic tokens need ``train_encoder: true``; a new VAE has its ``scale_factor``
measured again), and the acoustic encoder and UNet continue from the codec's weights.
``data.latent_cache`` (a folder of ``recipes/codec/cache_latents.py``) trains a prior alone on cached
tokens and target latents instead of corpus crops: the frozen encoders then never run, and a step
costs the prior alone (``pitched_share`` must be 0 there: the cache holds its own note crops).
Writes ``<run_dir>/weights.safetensors`` (encoder LSTM, projection and VQ; UNet, schedule and
``scale_factor``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from codec.acoustic import (
    build_lstm_input,
    mask_padding_rows,
    run_acoustic_lstm,
    silence_cutoff_rows,
)
from codec.config import CodecConfig
from codec.diffusion.conditioning import build_context
from codec.model import PRECISIONS, SemantiCodec
from codec.semantic import concat_patches
from codec.training.vq import EMAQuantizerTrainer
from recipes.codec.cache_latents import LatentCacheDataModule, cached_window_features, token_budgets, vae_posterior
from recipes.codec.train_vae import VAE_PARTS, crop_mel
from semanticodec_lm.training.codec_stages import (
    StageModule,
    audio_data,
    full_precision,
    load_into,
    model_kwargs,
    parse_args,
    read_weights,
    run_stage,
    segment_fbank,
)
from semanticodec_lm.training.pitched_audio import random_pitched_audio
from semanticodec_lm.training.runs import section

TRAINED_ENCODER_PARTS = ("encoder.encoder.", "encoder.encoder_output_linear.", "encoder.quantizer.",
                         "encoder.fbank_projection.")


class LDMModule(StageModule):
    """Joint acoustic-encoder + UNet training of ``codec``; ``audiomae``, ``kmeans`` and ``vae`` are
    run folders (or weights files) of stages a, b and d (None: left at initialisation, tests only)."""

    stage = "ldm"

    def __init__(self, codec: str, seed: int = 0, audiomae: str | None = None, kmeans: str | None = None,
                 vae: str | None = None, cfg_dropout: float = 0.1, commitment_weight: float = 1.0,
                 vq_decay: float = 0.9, dead_code_threshold: float = 0.0, lr: float = 1e-4,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 100,
                 min_lr_ratio: float = 1.0, min_snr_gamma: float = 0.0, ema_decay: float = 0.0,
                 init_from: str | None = None, train_encoder: bool = True, latent_precision: str = "fp32",
                 latent_head_weight: float = 0.0, pitched_share: float = 0.0, train_unet: bool = True,
                 prior_mel_weight: float = 0.0, prior_mel_frames: int = 64) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        if latent_precision not in PRECISIONS:
            raise SystemExit(f"model.latent_precision must be one of {', '.join(PRECISIONS)}, got {latent_precision!r}")
        if latent_head_weight < 0:
            raise SystemExit(f"model.latent_head_weight must be >= 0, got {latent_head_weight}")
        if not 0.0 <= pitched_share <= 1.0:
            raise SystemExit(f"model.pitched_share must be in [0, 1], got {pitched_share}")
        if prior_mel_weight < 0 or prior_mel_frames < 1:
            raise SystemExit(f"model.prior_mel_weight must be >= 0 and model.prior_mel_frames >= 1, got "
                             f"{prior_mel_weight} and {prior_mel_frames}")
        config = self.codec_config
        if prior_mel_weight > 0 and not (config.unet.latent_prior_width and latent_head_weight > 0):
            raise SystemExit("model.prior_mel_weight > 0 decodes the latent prior's estimate: it needs a config with "
                             "a latent prior and model.latent_head_weight > 0")
        if not train_unet and not (config.unet.latent_prior_width and latent_head_weight > 0 and not train_encoder):
            raise SystemExit("model.train_unet=false trains the latent prior alone: it needs a config with a latent "
                             "prior, model.latent_head_weight > 0 and model.train_encoder=false")
        if init_from:
            if (audiomae is not None or kmeans is not None) and not train_encoder:
                raise SystemExit("a new model.audiomae or model.kmeans changes the semantic tokens and the acoustic "
                                 "encoder's input: it needs model.train_encoder=true")
            self.codec = with_acoustic_input(
                with_latent_prior(SemantiCodec.from_pretrained(init_from), config.unet.latent_prior_width,
                                  config.unet.latent_prior_blocks),
                config.acoustic_input, train_encoder).requires_grad_(False)
            if self.codec.config.to_dict() | {"name": "", "vocoder": None} != config.to_dict() | {"name": "", "vocoder": None}:
                raise SystemExit(f"model.init_from={init_from}: its config differs from {config.name!r} beyond the vocoder")
        else:
            if not train_encoder:
                raise SystemExit("model.train_encoder=false needs model.init_from (a trained acoustic encoder to keep)")
            self.codec = SemantiCodec(config).requires_grad_(False)
        encoder, first_stage = self.codec.encoder, self.codec.decoder.first_stage_model
        if audiomae is not None:
            load_into(encoder.audiomae, "encoder.audiomae.", read_weights(audiomae, config, "audiomae"), audiomae)
        if kmeans is not None:
            load_into(encoder.semantic_codebook, "encoder.semantic_codebook.",
                      read_weights(kmeans, config, "kmeans"), kmeans)
        if vae is not None:
            weights = read_weights(vae, config, "vae")
            for part in VAE_PARTS:
                load_into(getattr(first_stage, part), f"decoder.first_stage_model.{part}.", weights, vae)
        trained = encoder.acoustic_modules if train_encoder else ()
        decoder_trained = self.codec.decoder.model if train_unet else self.codec.decoder.unet.latent_prior
        for module in (*trained, decoder_trained):
            module.requires_grad_(True)
        # The training-only head only teaches the acoustic encoder: a frozen one has nothing to learn from it.
        has_prior = bool(config.unet.latent_prior_width)
        self.latent_head = (build_latent_head(config) if latent_head_weight > 0 and train_encoder and not has_prior
                            else None)
        self.vq = EMAQuantizerTrainer(encoder.quantizer, vq_decay, dead_code_threshold)
        # A codec that starts trained already has its scale factor: the latent space must not move. A new
        # VAE is a new latent space: its scale is measured again on the first batch.
        self.register_buffer("scale_ready", torch.ones(()) if init_from and vae is None else torch.zeros(()))
        self.unet_ema = copy.deepcopy(self.codec.decoder.model).requires_grad_(False) if ema_decay > 0 else None
        if latent_precision == "bf16":  # the frozen VAE's activations run channels-last; so should its weights
            first_stage.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):
        super().train(mode)
        self.codec.encoder.audiomae.eval()
        self.codec.decoder.first_stage_model.eval()
        return self

    def conditioning(self, batch: dict, generator: torch.Generator, update_codebook: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Batch -> (decoder window features [B, T, 2F] with -1 rows, the same before conditioning dropout,
        commitment loss, logs)."""
        encoder, config = self.codec.encoder, self.codec_config
        fbank = segment_fbank(batch["audio"])
        tokens = config.tokens_per_segment
        with torch.no_grad(), full_precision(fbank.device):
            features = encoder.semantic_codebook.center(concat_patches(encoder.audiomae(fbank), config.concat_factor))
            centroids = encoder.semantic_codebook.lookup(encoder.semantic_codebook.nearest(features))
            cutoff = silence_cutoff_rows(fbank, tokens)
        lstm_input = build_lstm_input(encoder.acoustic_input_features(fbank, features), centroids, cutoff)
        acoustic = encoder.encoder_output_linear(run_acoustic_lstm(encoder.encoder, lstm_input))
        budget = token_budgets(config, batch["length"]).to(acoustic.device)
        valid = torch.arange(tokens, device=acoustic.device)[None, :] < torch.minimum(cutoff, budget)[:, None]
        quantized, commitment, logs = self.vq(acoustic, valid, generator,
                                              update_codebook and self.hparams.train_encoder)
        kept = mask_padding_rows(torch.cat([quantized, centroids], dim=-1), budget)
        dropped = torch.rand(kept.shape[0], generator=generator, device=generator.device) < self.hparams.cfg_dropout
        window = torch.where(dropped.to(kept.device)[:, None, None], torch.zeros_like(kept), kept)
        return window, kept, commitment, logs

    @torch.no_grad()
    def target_latents(self, mel: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel [B, 1, 1024, 64] of 10.24-s crops -> scaled VAE latent samples and posterior means, each
        [B, 8, 256, 16]; sets scale_factor on first use."""
        decoder = self.codec.decoder
        posterior = vae_posterior(decoder.first_stage_model, mel, self.hparams.latent_precision)
        with full_precision(mel.device):
            latents, means = posterior.sample(generator), posterior.mode()
        if not self.scale_ready:
            moments = torch.stack([latents.sum(), latents.pow(2).sum(), torch.tensor(float(latents.numel()),
                                                                                      device=latents.device)])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(moments)
            mean = moments[0] / moments[2]
            std = (moments[1] / moments[2] - mean.pow(2)).clamp(min=1e-12).sqrt()
            decoder.scale_factor.fill_(float(1.0 / std))
            self.scale_ready.fill_(1)
        return latents * decoder.scale_factor, means * decoder.scale_factor

    def loss(self, batch: dict, generator: torch.Generator, update_codebook: bool) -> tuple[torch.Tensor, dict]:
        """Batch ``audio`` [B, 163840], ``length`` [B] -> (v-MSE + commitment [+ latent head MSE] [+ prior mel
        L1], logs); a latent-cache batch (``tokens``, ``length``, ``latents``) -> the prior's latent MSE."""
        if "latents" in batch:
            return self.cached_prior_loss(batch)
        window, kept, commitment, logs = self.conditioning(batch, generator, update_codebook)
        mel = crop_mel(batch["audio"].float(), self.codec.decoder.first_stage_model.downsampling)
        z0, z0_mean = self.target_latents(mel, generator)
        decoder = self.codec.decoder
        total = self.hparams.commitment_weight * commitment
        if self.hparams.train_unet:
            steps = torch.randint(decoder.betas.numel(), (z0.shape[0],), generator=generator, device=generator.device)
            steps = steps.to(z0.device)
            noise = torch.randn(z0.shape, generator=generator, device=generator.device).to(z0.device)
            signal = decoder.sqrt_alphas_cumprod[steps][:, None, None, None]
            sigma = decoder.sqrt_one_minus_alphas_cumprod[steps][:, None, None, None]
            velocity = signal * noise - sigma * z0
            predicted = decoder.unet(signal * z0 + sigma * noise, steps, build_context(window))
            per_sample = (predicted.float() - velocity).pow(2).flatten(1).mean(dim=1)
            diffusion = (per_sample * self.loss_weights(steps)).mean()
            total = total + diffusion
            logs = {**logs, "diffusion": diffusion}
        estimate = None
        if self.latent_head is not None:
            estimate = predict_latents(self.latent_head, kept, self.codec_config)
        elif self.hparams.latent_head_weight > 0 and self.codec_config.unet.latent_prior_width:
            estimate = decoder.unet.estimate_latents(build_context(kept))
        if estimate is not None:
            latent_mse = (estimate.float() - z0_mean).pow(2).mean()
            total = total + self.hparams.latent_head_weight * latent_mse
            logs = {**logs, "latent_head": latent_mse}
            if self.hparams.prior_mel_weight > 0:
                prior_mel = self.prior_mel_l1(estimate, mel, generator)
                total = total + self.hparams.prior_mel_weight * prior_mel
                logs = {**logs, "prior_mel": prior_mel}
        return total, {"commitment": commitment, **logs}

    def cached_prior_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """``latent_head_weight`` x the MSE between the prior's estimate from cached tokens [B, tokens, 2]
        and the cached scaled posterior mean [B, C, T, F] (``recipes/codec/cache_latents.py``)."""
        window = cached_window_features(self.codec, batch["tokens"], batch["length"])
        estimate = self.codec.decoder.unet.estimate_latents(build_context(window))
        latent_mse = (estimate.float() - batch["latents"].float()).pow(2).mean()
        return self.hparams.latent_head_weight * latent_mse, {"latent_head": latent_mse}

    def on_fit_start(self) -> None:
        check_codec = getattr(self.trainer.datamodule, "check_codec", None)
        if check_codec is not None:  # a latent cache: its tokens and latents must be this codec's
            check_codec(self.codec)

    def prior_mel_l1(self, estimate: torch.Tensor, mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L1 (log-mel units) between the frozen VAE decoder's mel of a random ``prior_mel_frames``-frame
        span of the prior's scaled estimate [B, C, T, F] and the input's log-mel [B, 1, 4T, 64] there.

        The latent MSE weighs every latent unit alike, however little it moves the mel; this loss weighs
        errors by what they do to the spectrogram the vocoder renders. A span, not the whole window,
        because the decoder's backward pass over 10.24 s costs more than the rest of a prior-only step.
        """
        decoder = self.codec.decoder
        frames = min(self.hparams.prior_mel_frames, estimate.shape[2])
        start = int(torch.randint(estimate.shape[2] - frames + 1, (), generator=generator, device=generator.device))
        span = estimate[:, :, start:start + frames] / decoder.scale_factor
        factor = mel.shape[2] // estimate.shape[2]
        decoded = decoder.first_stage_model.decode(span)
        return (decoded.float() - mel[:, :, start * factor:(start + frames) * factor]).abs().mean()

    def loss_weights(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-sample weights of the v-MSE at diffusion steps ``steps`` [B]: min-SNR-γ (Hang et al. 2023;
        for v-prediction min(SNR, γ) / (SNR + 1)), or ones when ``min_snr_gamma`` is 0."""
        gamma = self.hparams.min_snr_gamma
        if not gamma:
            return torch.ones(steps.shape, device=steps.device)
        alpha_bar = self.codec.decoder.sqrt_alphas_cumprod[steps].double() ** 2
        snr = alpha_bar / (1 - alpha_bar)
        return (snr.clamp(max=gamma) / (snr + 1)).float()

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        if self.training and self.hparams.pitched_share > 0:
            batch = self.with_pitched_audio(batch, generator)
        return self.loss(batch, generator, update_codebook=self.training)

    def with_pitched_audio(self, batch: dict, generator: torch.Generator) -> dict:
        """``batch`` with each crop replaced, with probability ``pitched_share``, by a whole crop of random
        notes (:func:`semanticodec_lm.training.pitched_audio.random_pitched_audio`); validation never is."""
        audio = batch["audio"]
        chosen = torch.rand(len(audio), generator=generator, device=generator.device).cpu() < self.hparams.pitched_share
        count = int(chosen.sum())
        if not count:
            return batch
        seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
        notes = random_pitched_audio(count, audio.shape[-1], torch.Generator().manual_seed(seed))
        audio, length = audio.clone(), batch["length"].clone()
        audio[chosen.to(audio.device)] = notes.to(audio.device, audio.dtype)
        length[chosen.to(length.device)] = audio.shape[-1]
        return {**batch, "audio": audio, "length": length}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Move the UNet's moving average towards the weights just updated."""
        if self.unet_ema is not None:
            with torch.no_grad():
                decay = self.hparams.ema_decay
                for average, current in zip(self.unet_ema.parameters(), self.codec.decoder.model.parameters()):
                    average.lerp_(current, 1 - decay)

    def export_weights(self) -> dict[str, torch.Tensor]:
        state = self.codec.state_dict()
        if self.unet_ema is not None:  # the moving average is what ships
            state.update({f"decoder.model.{key}": value for key, value in self.unet_ema.state_dict().items()})
        return {key: value.detach().cpu().clone() for key, value in state.items()
                if key.startswith(TRAINED_ENCODER_PARTS)
                or (key.startswith("decoder.") and not key.startswith("decoder.first_stage_model."))}


def with_latent_prior(codec: SemantiCodec, width: int, blocks: int = 0) -> SemantiCodec:
    """``codec`` itself when its UNet's latent prior has ``width`` and ``blocks`` residual blocks (or the
    wanted width is 0), else a copy whose UNet gains what it lacks: a fresh prior of that width (the
    first convolution's new input channels start at zero) and/or more residual blocks (each ends in a
    zero convolution), so the grown UNet's output equals the old one's until training moves them."""
    unet_config = codec.config.unet
    old_width, old_blocks = unet_config.latent_prior_width, unet_config.latent_prior_blocks
    if not width or (width, blocks) == (old_width, old_blocks):
        return codec
    if old_width and old_width != width:
        raise SystemExit(f"model.init_from: its UNet's latent prior is {old_width} wide, the config's {width}; "
                         "a prior cannot be resized")
    if blocks < old_blocks:
        raise SystemExit(f"model.init_from: its latent prior has {old_blocks} residual blocks, the config's "
                         f"{blocks}; a prior cannot lose blocks")
    config = dataclasses.replace(codec.config, unet=dataclasses.replace(
        unet_config, latent_prior_width=width, latent_prior_blocks=blocks))
    grown = SemantiCodec(config)
    state = codec.state_dict()
    if not old_width:
        first = "decoder.model.diffusion_model.input_blocks.0.0.weight"
        widened = grown.state_dict()[first].zero_()
        widened[:, : state[first].shape[1]] = state[first]
        state[first] = widened
    missing, unexpected = grown.load_state_dict(state, strict=False)
    if unexpected or any(".latent_prior." not in key for key in missing):
        raise RuntimeError(f"growing a latent prior left keys unmatched: {missing + unexpected}")
    return grown


def with_acoustic_input(codec: SemantiCodec, acoustic_input: str, train_encoder: bool) -> SemantiCodec:
    """``codec`` itself when its acoustic encoder reads ``acoustic_input``, else a copy that reads it, with
    every weight kept but the input's own (a fresh ``fbank_projection``, or none): the acoustic
    encoder then has to learn again, so it needs ``train_encoder``."""
    if codec.config.acoustic_input == acoustic_input:
        return codec
    if not train_encoder:
        raise SystemExit(f"model.init_from: its acoustic encoder reads {codec.config.acoustic_input!r}, the "
                         f"config's {acoustic_input!r}; a new acoustic input needs model.train_encoder=true")
    changed = SemantiCodec(dataclasses.replace(codec.config, acoustic_input=acoustic_input))
    missing, unexpected = changed.load_state_dict(codec.state_dict(), strict=False)
    if any(not key.startswith("encoder.fbank_projection.") for key in missing + unexpected):
        raise RuntimeError(f"changing the acoustic input left keys unmatched: {missing + unexpected}")
    return changed


LATENT_HEAD_WIDTH = 256


def build_latent_head(config: CodecConfig) -> nn.Module:
    """Training-only head: conditioning [B, 2F, T] -> per-token latent columns [B, C x latent_freq, T]."""
    latent = config.diffusion
    return nn.Sequential(nn.Conv1d(2 * config.feature_dim, LATENT_HEAD_WIDTH, 5, padding=2), nn.GELU(),
                         nn.Conv1d(LATENT_HEAD_WIDTH, LATENT_HEAD_WIDTH, 5, padding=2), nn.GELU(),
                         nn.Conv1d(LATENT_HEAD_WIDTH, latent.latent_channels * latent.latent_freq, 1))


def predict_latents(head: nn.Module, window: torch.Tensor, config: CodecConfig) -> torch.Tensor:
    """Window features [B, T, 2F] -> predicted scaled latents [B, C, latent_time, latent_freq]; tokens are
    averaged (T > latent_time) or repeated (T < latent_time) onto the latent frame rate."""
    latent = config.diffusion
    columns = F.interpolate(head(window.transpose(1, 2)), size=latent.latent_time, mode="area")
    return columns.view(len(columns), latent.latent_channels, latent.latent_freq, -1).transpose(2, 3)


CACHE_IGNORED_DATA_KEYS = ("manifest", "segment_seconds")  # the stage YAML's; the cache fixed both


def cached_data(model: dict) -> Callable[[dict, int], L.LightningDataModule]:
    """The stage's data builder: corpus crops, or with ``data.latent_cache`` the cached tokens and latents,
    which only a prior trained alone (``model`` section) can use."""

    def build(values: dict, seed: int) -> L.LightningDataModule:
        cache = values.pop("latent_cache", None)
        if not cache:
            return audio_data(values, seed)
        settings = {"train_unet": True, "train_encoder": True, "prior_mel_weight": 0.0, "pitched_share": 0.0}
        settings = {key: model.get(key, default) for key, default in settings.items()}
        if settings["train_unet"] or settings["train_encoder"] or settings["prior_mel_weight"] or settings["pitched_share"]:
            raise SystemExit("data.latent_cache trains the latent prior alone on cached tokens and latents: it needs "
                             "model.train_unet=false, model.train_encoder=false, model.prior_mel_weight=0 and "
                             "model.pitched_share=0 (cache pitched crops with cache_latents.py --pitched); got "
                             + ", ".join(f"{key}={value}" for key, value in settings.items()))
        kept = {key: value for key, value in values.items() if key not in CACHE_IGNORED_DATA_KEYS}
        return LatentCacheDataModule(cache, seed=seed, **section({"data": kept}, "data", LatentCacheDataModule))

    return build


def main(argv: list[str] | None = None) -> dict:
    """Run stage c; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    return run_stage(config, lambda values, seed: LDMModule(**model_kwargs(values, LDMModule, seed)),
                     build_data=cached_data(config.get("model") or {}))


if __name__ == "__main__":
    main()
