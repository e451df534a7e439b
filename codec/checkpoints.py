"""Weights in and out: official ``.ckpt``/``.npy`` files, our safetensors exports, hub downloads.

Official layout (the hub repository ``haoheliu/SemantiCodec``, or a local copy of it)::

    semanticodec_tokenrate_{100,50,25}/encoder.ckpt   flat state dict (AudioMAE, BiLSTM, VQ)
    semanticodec_tokenrate_{100,50,25}/decoder.ckpt   flat state dict (UNet, model_ema.*, VAE, vocoder)
    codebook_idx/combine_{512,256,128}_audioset_dominate/codebook_{V/2}_0.npy   k-means [V, F]

Pickled ``.ckpt`` files are only ever opened with ``torch.load(..., weights_only=True)``, which
refuses to run code. Our own weights are safetensors: ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from codec.config import CodecConfig
from codec.files import atomic_path, write_text_atomic
from codec.encoder import CENTROIDS_KEY

HUB_REPO = "haoheliu/SemantiCodec"
TOKENS_PER_SEGMENT_NAME = {100: 512, 50: 256, 25: 128}


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or does not fit the configuration."""


def official_files(token_rate: int, semantic_vocab_size: int) -> dict[str, str]:
    """Relative paths of the three official files for one variant."""
    folder = f"semanticodec_tokenrate_{token_rate}"
    codebook = (
        f"codebook_idx/combine_{TOKENS_PER_SEGMENT_NAME[token_rate]}_audioset_dominate/"
        f"codebook_{semantic_vocab_size // 2}_0.npy"
    )
    return {"encoder": f"{folder}/encoder.ckpt", "decoder": f"{folder}/decoder.ckpt", "codebook": codebook}


def download_official(token_rate: int, semantic_vocab_size: int, cache_dir: str | None = None) -> Path:
    """Fetch the official files with huggingface_hub (needs the network) and return the folder."""
    from huggingface_hub import hf_hub_download

    root = None
    for relative in official_files(token_rate, semantic_vocab_size).values():
        try:
            local = Path(hf_hub_download(repo_id=HUB_REPO, filename=relative, cache_dir=cache_dir))
        except Exception as error:  # noqa: BLE001 - offline, proxy, HTTP and cache errors all mean "not here"
            raise CheckpointError(
                f"cannot get {relative} from the Hugging Face hub ({type(error).__name__}: {str(error)[:200]}); "
                f"offline, pass --checkpoint-path (checkpoint_path=) with a local copy of the hub repository "
                f"{HUB_REPO}, or use the shipped offline codec `default`") from None
        root = local.parents[len(Path(relative).parts) - 1]
    assert root is not None
    return root


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat tensor dict from a pickled checkpoint, loaded without executing code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Legacy (non-zip) pickles cannot be memory-mapped.
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not loadable safely"
        raise CheckpointError(f"{path}: cannot be loaded as plain weights ({error})") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors")
    return data


def read_codebook(path: str | os.PathLike, config: CodecConfig) -> torch.Tensor:
    """The k-means centroids [V, F] float32 from an official ``.npy`` (no pickle allowed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: codebook not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{path}: not a numpy array file ({error})") from None
    want = (config.semantic_vocab_size, config.feature_dim)
    if tuple(array.shape) != want:
        raise CheckpointError(f"{path}: codebook shape {tuple(array.shape)}, expected {want} for {config.name}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """load_state_dict(strict=True) with one readable error listing missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    # Buffers a module may or may not hold (its load hook sets or drops them), e.g. a centred codebook's mean.
    optional = {f"{prefix}.{key}".lstrip(".") for prefix, sub in module.named_modules()
                for key in getattr(sub, "optional_state_keys", ())}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own) - optional)
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError(f"{name}: weights do not fit the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True, assign=any(p.is_meta for p in module.parameters()))


def normalise_official_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the VQ ``initted`` flag as written by any vector-quantize-pytorch version."""
    state = dict(state)
    initted = state.get("quantizer._codebook.initted")
    if initted is not None and initted.dim() == 0:
        state["quantizer._codebook.initted"] = initted.float().reshape(1)
    return state


def official_decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the EMA copy of the UNet: inference uses ``model.*``, as the official code does."""
    return {k: v for k, v in state.items() if not k.startswith("model_ema.")}


def load_official_weights(codec: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load encoder.ckpt, decoder.ckpt and the k-means .npy from an official-layout folder."""
    config: CodecConfig = codec.config
    folder = Path(folder)
    files = official_files(config.token_rate, config.semantic_vocab_size)
    encoder_state = normalise_official_encoder_state(read_torch_checkpoint(folder / files["encoder"]))
    encoder_state[CENTROIDS_KEY] = read_codebook(folder / files["codebook"], config)
    _load_strict(codec.encoder, encoder_state, str(folder / files["encoder"]))
    decoder_state = official_decoder_state(read_torch_checkpoint(folder / files["decoder"]))
    _load_strict(codec.decoder, decoder_state, str(folder / files["decoder"]))


def save_safetensors(codec: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """Export ``config.json`` + ``model.safetensors`` (weights shared by storage are cloned)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in codec.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as temporary:
        save_file(state, str(temporary), metadata={"format": "pt"})
    config_text = json.dumps(codec.config.to_dict(), indent=2, sort_keys=True)
    write_text_atomic(folder / "config.json", config_text)
    return folder


def read_safetensors_folder(folder: str | os.PathLike) -> tuple[CodecConfig, dict[str, torch.Tensor]]:
    """The config and weights of a folder written by :func:`save_safetensors`."""
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found (expected a folder written by save_pretrained)")
    try:
        data = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: not a codec config ({error})") from None
    if isinstance(data, dict) and "format" in data and "model" in data:
        raise CheckpointError(f"{folder}: an LM folder, not a codec (give it to `semanticodec generate --model`)")
    try:
        config = CodecConfig.from_dict(data)
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_path}: not a valid codec config ({error})") from None
    return config, load_file(str(weights_path))


def load_state(codec: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Strictly load our own (safetensors) state dict into a codec, with a readable error."""
    _load_strict(codec, state, name)


