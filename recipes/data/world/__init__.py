"""The synthetic sound world: music theory, synthesis, MIDI and Festival rendering, the clip plan."""
