"""Synthetic English speech with known text: a seeded sentence grammar and Festival's text2wave."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from recipes.data.audio import decode_audio

# name -> (Festival voice command, speaker sex, licence of the voice data)
FESTIVAL_VOICES = {
    "kal": ("(voice_kal_diphone)", "male", "festvox-kallpc16k: permissive CSTR/CMU licence (Black & Lenzo 1998)"),
    "slt": ("(voice_cmu_us_slt_arctic_hts)", "female", "festvox-us-slt-hts: EST-2003 / BSD-3-clause"),
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_SUBJECTS = ("the old man", "a young girl", "my neighbour", "the teacher", "our dog", "the small cat", "a farmer",
             "the driver", "my sister", "the doctor", "a tall soldier", "the baker", "your brother", "the pilot")
_VERBS = ("opened", "painted", "carried", "found", "washed", "closed", "cleaned", "lifted", "watched", "dropped",
          "repaired", "counted", "moved", "sold")
_OBJECTS = ("the red door", "a heavy box", "the green window", "an empty bottle", "the wooden chair", "a blue kite",
            "the kitchen table", "a paper map", "the garden gate", "a yellow boat", "the silver key", "a warm coat")
_PLACES = ("in the morning", "before lunch", "near the river", "after the storm", "on the bridge", "at the station",
           "in the park", "behind the house", "during the night", "by the sea")
_CITIES = ("Paris", "London", "Boston", "Madrid", "Berlin", "Chicago", "Denver", "Dublin", "Oslo", "Rome")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty")
_THINGS = ("apples", "books", "candles", "tickets", "letters", "chairs", "pencils", "oranges", "stones", "cups")


class SpeechError(RuntimeError):
    """Festival or one of its voices is missing, or synthesis failed."""


def random_sentence(rng: np.random.Generator) -> str:
    """A short grammatical English sentence drawn from a fixed grammar (no punctuation but a full stop)."""
    template = int(rng.integers(4))
    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    if template == 0:
        text = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_PLACES)}"
    elif template == 1:
        text = f"{pick(_SUBJECTS)} bought {pick(_NUMBERS)} {pick(_THINGS)} in {pick(_CITIES)}"
    elif template == 2:
        text = f"it is {pick(_NUMBERS)} degrees in {pick(_CITIES)} {pick(_PLACES)}"
    else:
        text = f"please put {pick(_NUMBERS)} {pick(_THINGS)} {pick(('on', 'under', 'beside'))} {pick(_OBJECTS)}"
    return text[0].upper() + text[1:] + "."


def random_digits(rng: np.random.Generator, count: int) -> tuple[str, str]:
    """``count`` random digits as (numerals with spaces, spoken words), e.g. ("3 0 7", "three zero seven")."""
    digits = rng.integers(10, size=count)
    return " ".join(str(int(d)) for d in digits), " ".join(DIGIT_WORDS[int(d)] for d in digits)


def festival_available(voice: str) -> bool:
    """True when ``text2wave`` and the Festival voice named ``voice`` (``kal`` or ``slt``) are installed."""
    folders = {"kal": "/usr/share/festival/voices/english/kal_diphone",
               "slt": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"}
    return shutil.which("text2wave") is not None and os.path.isdir(folders[voice])


def synthesise(text: str, voice: str) -> np.ndarray:
    """Speak ``text`` with Festival voice ``voice``; float32 mono at 16 kHz."""
    if voice not in FESTIVAL_VOICES:
        raise SpeechError(f"unknown Festival voice {voice!r}; expected one of {tuple(FESTIVAL_VOICES)}")
    if not festival_available(voice):
        raise SpeechError(f"Festival (text2wave) or its voice {voice!r} is not installed")
    with tempfile.TemporaryDirectory(prefix="corpus-festival-") as folder:
        text_path, wave_path = Path(folder, "in.txt"), Path(folder, "out.wav")
        text_path.write_text(text + "\n", encoding="utf-8")
        command = ["text2wave", "-eval", FESTIVAL_VOICES[voice][0], str(text_path), "-o", str(wave_path)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wave_path.is_file():
            raise SpeechError(f"text2wave failed for voice {voice!r}: {result.stderr.strip()[-300:]}")
        return decode_audio(wave_path, "Festival output")
