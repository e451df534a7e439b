"""Real sound effects: OpenTTD's OpenSFX archive and Bucklespring's keyboard recordings."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from recipes.data.audio import SAMPLE_RATE, decode_audio
from recipes.data.recording import Recording
from recipes.data.sources.archives import ArchiveError, CatEntry, read_opensfx_cat
from recipes.data.sources.base import Job, Problems, list_files
from codec.manifest import SPLITS
from semanticodec_lm.corpus.splits import archive_item, split_for

OPENSFX_LICENCES = {
    "Creative Commons Attribution-ShareAlike 3.0": "CC-BY-SA-3.0",
    "Creative Commons Attribution 3.0": "CC-BY-3.0",
    "Creative Commons Zero 1.0": "CC0-1.0",
}
_THEME_PREFIX = re.compile(r"^(Toyland|Tropical|Lumber mill|Arctic|Sub-arctic):\s*")


@functools.lru_cache(maxsize=2)
def _catalogue(path: str) -> dict[str, CatEntry]:
    return {entry.name: entry for entry in read_opensfx_cat(path)}


def parse_opensfx_name(name: str) -> tuple[str, str]:
    """(clean caption, licence) from an OpenSFX text field.

    ``"Toyland: Sugar mine (1)". ... License: Creative Commons Zero 1.0.`` gives
    ``("sugar mine", "CC0-1.0")``: the quoted description without theme prefix, trailing number
    in brackets, first letter lower-cased; licence ``unknown`` if none is named.
    """
    quoted = re.match(r'\s*"([^"]+)"', name)
    description = quoted.group(1) if quoted else name.split(".")[0]
    description = _THEME_PREFIX.sub("", description)
    description = re.sub(r"\s*\(\d+\)\s*$", "", description).strip()
    licence = next((short for long, short in OPENSFX_LICENCES.items() if long in name), "unknown")
    return description[:1].lower() + description[1:], licence


@dataclass(frozen=True)
class OpenSfx:
    """The OpenSFX sound set: 73 archive entries, the RIFF ones are used, captions from their text."""

    package: str = "openttd-opensfx"
    archive: str = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    name: str = "opensfx"

    @property
    def packages(self) -> tuple[str, ...]:
        """The OpenSFX package."""
        return (self.package,)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per entry with RIFF audio; the item is ``<archive>#<text field>``."""
        if self.package not in available:
            problems.missing_packages.setdefault(self.package, "not installed")
            return []
        try:
            entries = _catalogue(self.archive)
        except (OSError, ArchiveError) as error:
            problems.messages.append(f"{self.archive}: skipped ({error})")
            return []
        jobs = []
        for name, entry in entries.items():
            if not entry.audio.startswith(b"RIFF"):
                continue
            item = archive_item(self.archive, name)
            jobs.append(Job(self.name, self.package, item, (item,), split_for(self.package, item), {"entry": name}))
        return jobs

    def render(self, job: Job) -> Recording:
        """Decode one entry; caption and licence come from its text field."""
        name = job.args["entry"]
        wave = decode_audio(_catalogue(self.archive)[name].audio, job.items[0])
        caption, licence = parse_opensfx_name(name)
        return Recording(wave, "sfx", ["sound effect", caption], caption, licence, list(job.items),
                         params={"description": name})


@dataclass(frozen=True)
class BucklespringTyping:
    """Typing on an IBM Model M: sequences of real key press/release recordings.

    Every file is an item with its own split; a sequence of split S only uses files of split S.
    """

    package: str = "bucklespring-data"
    folder: str = "/usr/share/buckle/wav"
    files_per_sequence: int = 4  # sequences per split = files in the split / this
    seconds: tuple[float, float] = (3.0, 8.0)
    name: str = "bucklespring"

    @property
    def packages(self) -> tuple[str, ...]:
        """The Bucklespring sample package."""
        return (self.package,)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """Per split, ``len(files) // files_per_sequence`` (at least one) typing-sequence jobs."""
        if self.package not in available:
            problems.missing_packages.setdefault(self.package, "not installed")
            return []
        files = list_files(self.folder, (".wav",))
        jobs = []
        for split in SPLITS:
            chosen = tuple(path for path in files if split_for(self.package, path) == split)
            for index in range(max(1, len(chosen) // self.files_per_sequence) if chosen else 0):
                key = f"typing-{split}-{index:03d}"
                jobs.append(Job(self.name, self.package, key, chosen, split, {"index": index}))
        return jobs

    def render(self, job: Job) -> Recording:
        """Place press and release sounds at human-like intervals; uses only ``job.items``."""
        rng = np.random.default_rng([int.from_bytes(job.key.encode(), "little") % (2**63)])
        seconds = float(rng.uniform(*self.seconds))
        wave = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        presses = [path for path in job.items if path.endswith("-0.wav")] or list(job.items)
        releases = {path[: -len("-0.wav")]: path.replace("-0.wav", "-1.wav") for path in presses}
        available = set(job.items)
        time, used = 0.1, set()
        while time < seconds - 0.4:
            press = presses[int(rng.integers(len(presses)))]
            used.add(press)
            _overlay(wave, _key_sound(press), time)
            release = releases.get(press[: -len("-0.wav")])
            if release in available:
                used.add(release)
                _overlay(wave, _key_sound(release), time + float(rng.uniform(0.06, 0.14)))
            time += float(rng.uniform(0.12, 0.45))
        return Recording(wave, "sfx", ["typing", "keyboard"], "typing on a mechanical computer keyboard",
                         "GPL-2+", sorted(used), params={"keystrokes_from": len(presses)})


@functools.lru_cache(maxsize=512)
def _key_sound(path: str) -> np.ndarray:
    return decode_audio(path, path)


def _overlay(wave: np.ndarray, sound: np.ndarray, seconds: float) -> None:
    start = int(seconds * SAMPLE_RATE)
    piece = sound[: max(0, wave.shape[0] - start)]
    wave[start : start + piece.shape[0]] += piece
