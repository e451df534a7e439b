"""The AudioMAE's masked-autoencoder pre-training pass (training only; inference runs ``AudioMAEViT.forward``)."""

from __future__ import annotations

import torch

from codec.config import PATCHES_PER_SEGMENT, SEGMENT_FRAMES
from codec.semantic import MEL_BINS, PATCH_GRID, AudioMAEViT


def patchify(vit: AudioMAEViT, fbank: torch.Tensor) -> torch.Tensor:
    """Fbank [S, 1024, 128] -> patches [S, 512, p*p] in the PatchEmbed order (8 t + f), rows of p frames."""
    patch = vit.patch_embed.proj.kernel_size[0]
    time_patches, freq_patches = PATCH_GRID
    grid = fbank.reshape(fbank.shape[0], time_patches, patch, freq_patches, patch)
    return grid.permute(0, 1, 3, 2, 4).reshape(fbank.shape[0], PATCHES_PER_SEGMENT, patch * patch)


def mae_loss(
    vit: AudioMAEViT,
    fbank: torch.Tensor,
    mask_ratio: float = 0.8,
    generator: torch.Generator | None = None,
    norm_pix_loss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked-autoencoder pre-training pass (official AudioMAE conventions, global-attention decoder).

    fbank [S, 1024, 128] float -> (loss scalar, pred [S, 512, p*p], mask [S, 512] float, 1 = hidden).
    Each segment hides its own random ``int(512 * (1 - mask_ratio))``-complement of patches (noise
    from ``generator``); the loss is the mean squared patch error over hidden patches only, against
    raw patches or, with ``norm_pix_loss``, patches normalised by their own mean and variance.
    """
    if fbank.dim() != 3 or tuple(fbank.shape[1:]) != (SEGMENT_FRAMES, MEL_BINS):
        raise ValueError(f"expected fbank segments [S, {SEGMENT_FRAMES}, {MEL_BINS}], got {list(fbank.shape)}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    segments = fbank.shape[0]
    keep = int(PATCHES_PER_SEGMENT * (1 - mask_ratio))
    noise_device = generator.device if generator is not None else fbank.device
    noise = torch.rand(segments, PATCHES_PER_SEGMENT, generator=generator, device=noise_device).to(fbank.device)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    kept_ids = shuffle[:, :keep]

    x = vit.patch_embed(fbank.unsqueeze(1)) + vit.pos_embed[:, 1:]
    x = torch.gather(x, 1, kept_ids[..., None].expand(-1, -1, x.shape[-1]))
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(segments, -1, -1)
    x = torch.cat([cls, x], dim=1)
    for block in vit.blocks:
        x = block(x)
    x = vit.decoder_embed(vit.norm(x))

    hidden = vit.mask_token.expand(segments, PATCHES_PER_SEGMENT - keep, -1)
    patches = torch.cat([x[:, 1:], hidden], dim=1)
    patches = torch.gather(patches, 1, restore[..., None].expand(-1, -1, patches.shape[-1]))
    x = torch.cat([x[:, :1], patches], dim=1) + vit.decoder_pos_embed
    for block in vit.decoder_blocks:
        x = block(x)
    pred = vit.decoder_pred(vit.decoder_norm(x))[:, 1:]

    mask = torch.ones(segments, PATCHES_PER_SEGMENT, device=fbank.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, restore)
    target = patchify(vit, fbank)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    loss = (per_patch * mask).sum() / mask.sum()
    return loss, pred, mask
