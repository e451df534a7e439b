"""The MAE pre-training pass: hides the asked share of patches per segment, seeded, patches laid out as PatchEmbed reads them."""

import pytest
import torch

from codec.config import get_config
from codec.semantic import AudioMAEViT
from codec.training.mae import mae_loss, patchify


@pytest.fixture(scope="module")
def vit() -> AudioMAEViT:
    torch.manual_seed(0)
    return AudioMAEViT(get_config("tiny-100").audiomae).eval()


def test_patches_follow_the_patch_embedding_order(vit):
    # Patch 8t + f covers frames 16t..16t+15 and bins 16f..16f+15.
    frames = torch.arange(1024).float()[:, None].expand(1024, 128)
    bins = torch.arange(128).float()[None, :].expand(1024, 128)
    assert torch.equal(patchify(vit, frames[None])[0, 8 * 3 + 5].reshape(16, 16)[:, 0], torch.arange(48, 64).float())
    assert torch.equal(patchify(vit, bins[None])[0, 8 * 3 + 5].reshape(16, 16)[0], torch.arange(80, 96).float())


def test_mae_loss_hides_the_asked_share_and_is_seeded(vit):
    fbank = torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(1))
    loss, pred, mask = mae_loss(vit, fbank, 0.75, torch.Generator().manual_seed(3))
    assert pred.shape == (2, 512, 256) and torch.equal(mask.sum(1), torch.tensor([384.0, 384.0]))
    again, _, _ = mae_loss(vit, fbank, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(loss, again) and loss > 0
    per_patch = (pred - patchify(vit, fbank)).pow(2).mean(-1)
    assert torch.allclose(loss, (per_patch * mask).sum() / mask.sum())  # hidden patches only
    with pytest.raises(ValueError, match="mask_ratio"):
        mae_loss(vit, fbank, 1.0)
