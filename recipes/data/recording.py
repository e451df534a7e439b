"""The unit every source hands to the builder: one decoded recording and what is known about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Recording:
    """A recording at 16 kHz mono (float32 ``wave``) with its description.

    ``caption`` states what is heard in the whole recording; when the builder has to cut a long
    recording into several clips, each piece gets ``piece_caption`` instead (default: the
    caption) and no transcript, because the words of a piece are not known.
    ``items`` lists every source item the audio is made from (one for a plain file).
    """

    wave: np.ndarray
    domain: str
    labels: list[str]
    caption: str
    licence: str
    items: list[str]
    transcript: str | None = None
    language: str | None = None
    speaker: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    piece_caption: str | None = None
