"""Source families of real recordings, one module per kind of package (speech, music, effects)."""
