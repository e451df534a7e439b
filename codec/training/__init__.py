"""Training-only code of the codec: discriminators, adversarial and spectral losses."""
