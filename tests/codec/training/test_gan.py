"""Discriminators and GAN losses of the vocoder training."""

import torch


def test_discriminators_shapes_losses_and_gradients():
    from codec.training.gan import (
        MultiResolutionDiscriminator,
        MultiPeriodDiscriminator,
        MultiScaleDiscriminator,
        discriminator_loss,
        feature_matching_loss,
        generator_adversarial_loss,
    )

    torch.manual_seed(0)
    real = torch.randn(2, 1, 2401).clamp(-1, 1)
    fake = (0.5 * torch.randn(2, 1, 2401)).requires_grad_()
    # Two periods keep the test fast; the default five differ only in the fold width.
    cases = ((MultiPeriodDiscriminator((2, 3)), 2, 6), (MultiScaleDiscriminator(), 3, 8),
             (MultiResolutionDiscriminator(channels=8), 3, 6))
    for discriminator, count, maps_each in cases:
        real_logits, real_features = discriminator(real)
        fake_logits, fake_features = discriminator(fake)
        assert len(real_logits) == len(real_features) == count
        assert all(logits.dim() == 2 and logits.shape[0] == 2 for logits in real_logits)
        assert all(len(maps) == maps_each for maps in real_features)
        loss = generator_adversarial_loss(fake_logits) + feature_matching_loss(real_features, fake_features)
        loss.backward()
        assert fake.grad is not None and fake.grad.abs().sum() > 0
        fake.grad = None
        assert discriminator_loss(real_logits, fake_logits) > 0
    perfect = [torch.ones(2, 3)], [torch.zeros(2, 3)]
    assert discriminator_loss(*perfect) == 0
    assert generator_adversarial_loss([torch.ones(2, 3)]) == 0
    assert feature_matching_loss([[torch.ones(2, 3)]], [[torch.ones(2, 3)]]) == 0
