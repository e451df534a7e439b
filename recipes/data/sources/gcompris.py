"""GCompris sounds inside Qt ``.rcc`` bundles: solo instruments, world music, farm animals, effects.

Items are ``<bundle path>#<member path>``; licences come from the package's DEP-5 copyright file
(matched on the member's source path), defaulting to GPL-3+.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from recipes.data.audio import decode_audio
from recipes.data.recording import Recording
from recipes.data.sources.archives import ArchiveError, read_rcc
from recipes.data.sources.base import Job, Problems, words_from_name
from semanticodec_lm.corpus.splits import archive_item, split_for

AUDIO_SUFFIXES = (".ogg", ".wav", ".flac")
ANIMAL_SOUNDS = {"cat": "meowing", "chickens": "clucking", "cow": "mooing", "dog": "barking", "duck": "quacking",
                 "horse": "neighing", "owl": "hooting", "pig": "oinking", "sheep": "bleating"}
INSTRUMENT_NAMES = {"flute_traversiere": "flute", "snare_drum": "snare drum", "drum_kit": "drum kit",
                    "electric_guitar": "electric guitar"}
WORLD_MUSIC = {"africa": "traditional African music", "america": "traditional American folk music",
               "australia": "traditional Australian music", "beethoven": "a classical piece by Beethoven",
               "ireland": "traditional Irish music", "italy": "traditional Italian music",
               "japan": "traditional Japanese music", "mexico": "traditional Mexican music",
               "middleeast": "traditional Middle Eastern music"}
EFFECT_NAMES = {"weird": "a strange synthetic sound", "la pause": "a short musical jingle",
                "guitar son": "a single guitar note", "guitar melody": "a short guitar melody",
                "applauses": "applause", "hits": "hits and knocks"}


@functools.lru_cache(maxsize=4)
def _bundle(path: str) -> dict[str, bytes]:
    return read_rcc(path)


def effect_caption(stem: str) -> str:
    """A caption from a memory-sound file stem: ``LRRain_in_garden_01_LA_cut`` -> ``rain in garden``."""
    stem = re.sub(r"^LR", "", stem)
    stem = re.sub(r"(_?LA(_?[Cc]ut)?|_cut|_short)$", "", stem)
    stem = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)
    words = re.sub(r"[_\d]+", " ", stem).lower().split()
    text = " ".join(words)
    return EFFECT_NAMES.get(text, text)


@dataclass(frozen=True)
class GcomprisBundles:
    """The four GCompris bundles with real recordings."""

    package: str = "gcompris-qt-data"
    folder: str = "/usr/share/gcompris-qt/rcc"
    copyright_file: str = "/usr/share/doc/gcompris-qt-data/copyright"
    name: str = "gcompris"
    bundles: tuple[str, ...] = ("instruments", "explore_world_music", "explore_farm_animals", "memory-sound")

    @property
    def packages(self) -> tuple[str, ...]:
        """The GCompris data package."""
        return (self.package,)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per audio member of each bundle; an unreadable bundle is reported and skipped."""
        from recipes.data.sources.licences import Dep5Licences

        if self.package not in available:
            problems.missing_packages.setdefault(self.package, "not installed")
            return []
        licences = Dep5Licences.from_file(self.copyright_file, default="GPL-3+")
        jobs = []
        for bundle in self.bundles:
            path = f"{self.folder}/{bundle}.rcc"
            try:
                members = sorted(name for name in _bundle(path) if name.lower().endswith(AUDIO_SUFFIXES))
            except (OSError, ArchiveError) as error:
                problems.messages.append(f"{path}: skipped ({error})")
                continue
            for member in members:
                item = archive_item(path, member)
                jobs.append(Job(self.name, self.package, item, (item,), split_for(self.package, item),
                                {"bundle": bundle, "member": member, "licence": licences.licence_for(item)}))
        return jobs

    def render(self, job: Job) -> Recording:
        """Decode one member; caption and labels depend on the bundle."""
        bundle, member = job.args["bundle"], job.args["member"]
        archive = job.items[0].split("#", 1)[0]
        wave = decode_audio(_bundle(archive)[member], job.items[0])
        stem = member.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        licence = job.args["licence"]
        if bundle == "instruments":
            instrument = INSTRUMENT_NAMES.get(stem, words_from_name(stem))
            return Recording(wave, "music", ["instrument", instrument], f"a {instrument} playing solo", licence,
                             list(job.items), params={"instrument": instrument})
        if bundle == "explore_world_music":
            caption = WORLD_MUSIC.get(stem, f"music from {words_from_name(stem)}")
            return Recording(wave, "music", ["music", "world music", words_from_name(stem)], caption, licence,
                             list(job.items), params={"region": stem})
        if bundle == "explore_farm_animals":
            verb = ANIMAL_SOUNDS.get(stem, "calling")
            subject = stem if stem.endswith("s") else f"a {stem}"
            return Recording(wave, "sfx", ["animal", stem], f"{subject} {verb}", licence, list(job.items),
                             params={"animal": stem})
        caption = effect_caption(stem)
        domain = "music" if stem.startswith(("guitar", "LRLaPause")) else "sfx"
        return Recording(wave, domain, [caption.removeprefix("a ").removeprefix("an ")], caption, licence,
                         list(job.items), params={"effect": stem})
