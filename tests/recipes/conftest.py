"""Fixtures shared by the codec-stage recipe tests."""

import dataclasses

import pytest

from codec.config import CONFIGS, get_config


@pytest.fixture
def tiny_with_prior(monkeypatch):
    """(tiny-100, the same with a 16-wide latent prior, registered as "tiny-prior-100")."""
    tiny = get_config("tiny-100")
    with_prior = dataclasses.replace(tiny, name="tiny-prior-100",
                                     unet=dataclasses.replace(tiny.unet, latent_prior_width=16))
    monkeypatch.setitem(CONFIGS, "tiny-prior-100", with_prior)
    return tiny, with_prior
