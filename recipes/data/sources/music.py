"""Real music files read in place: game soundtracks (Ogg) and the Sonic Pi sample library (FLAC)."""

from __future__ import annotations

from dataclasses import dataclass

from recipes.data.audio import decode_audio
from recipes.data.recording import Recording
from recipes.data.sources.base import Job, Problems, item_job, list_files, words_from_name
from recipes.data.sources.licences import Dep5Licences


@dataclass(frozen=True)
class GameMusic:
    """The Ogg soundtrack of one game package; long tracks are cut by the builder."""

    package: str
    folder: str
    game: str
    description: str  # what the music sounds like, e.g. "orchestral fantasy game music"
    licence: str
    recursive: bool = False
    name: str = "game_music"

    @property
    def packages(self) -> tuple[str, ...]:
        """The one package holding the soundtrack."""
        return (self.package,)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per track."""
        if self.package not in available:
            problems.missing_packages.setdefault(self.package, "not installed")
            return []
        return [item_job(self.name, self.package, path) for path in list_files(self.folder, (".ogg",), self.recursive)]

    def render(self, job: Job) -> Recording:
        """Decode one track; the caption names the game and the track title."""
        title = words_from_name(job.items[0].rsplit("/", 1)[-1].rsplit(".", 1)[0])
        caption = f'{self.description} from {self.game}, the track "{title}"'
        return Recording(decode_audio(job.items[0], job.items[0]), "music", ["music", "game music", self.game],
                         caption, self.licence, list(job.items), params={"game": self.game, "title": title})


# Sonic Pi file-name prefix -> (domain, label, caption stem).
SONIC_PI_CATEGORIES = {
    "ambi": ("music", "ambient texture", "an ambient synthesiser texture"),
    "bass": ("music", "bass", "a synthesiser bass sound"),
    "bd": ("music", "bass drum", "a bass drum hit"),
    "drum": ("music", "drum", "an acoustic drum sound"),
    "elec": ("music", "electronic percussion", "an electronic percussion sound"),
    "glitch": ("sfx", "glitch", "a glitchy electronic sound"),
    "guit": ("music", "guitar", "an electric guitar sound"),
    "loop": ("music", "drum loop", "a rhythmic loop"),
    "mehackit": ("sfx", "electronic effect", "an electronic sound effect"),
    "misc": ("sfx", "sound effect", "a sound effect"),
    "perc": ("sfx", "percussive effect", "a percussive sound"),
    "sn": ("music", "snare drum", "a snare drum hit"),
    "tabla": ("music", "tabla", "a tabla stroke"),
    "vinyl": ("sfx", "vinyl", "a vinyl record sound"),
}


@dataclass(frozen=True)
class SonicPiSamples:
    """The Sonic Pi sample library; licences per file from the package's DEP-5 copyright."""

    package: str = "sonic-pi-samples"
    folder: str = "/usr/share/sonic-pi/samples"
    copyright_file: str = "/usr/share/doc/sonic-pi-samples/copyright"
    name: str = "sonic_pi"

    @property
    def packages(self) -> tuple[str, ...]:
        """The sample package."""
        return (self.package,)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per sample whose name prefix is a known category."""
        if self.package not in available:
            problems.missing_packages.setdefault(self.package, "not installed")
            return []
        licences = Dep5Licences.from_file(self.copyright_file, default="MIT")
        jobs = []
        for path in list_files(self.folder, (".flac",)):
            prefix = path.rsplit("/", 1)[-1].split("_", 1)[0]
            if prefix in SONIC_PI_CATEGORIES:
                jobs.append(item_job(self.name, self.package, path, licence=licences.licence_for(path)))
            else:
                problems.messages.append(f"{path}: unknown Sonic Pi category {prefix!r}; skipped")
        return jobs

    def render(self, job: Job) -> Recording:
        """Decode one sample; caption from its category and the rest of its name."""
        stem = job.items[0].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        prefix, _, rest = stem.partition("_")
        domain, label, caption = SONIC_PI_CATEGORIES[prefix]
        detail = words_from_name(rest)
        return Recording(decode_audio(job.items[0], job.items[0]), domain, [label], f"{caption} ({detail})" if detail
                         else caption, job.args["licence"], list(job.items), params={"sample": stem})


GAME_MUSIC = (
    GameMusic("wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music", "Battle for Wesnoth",
              "orchestral fantasy game music", "GPL-2+"),
    GameMusic("singularity-music", "/usr/share/games/singularity/music", "Endgame: Singularity",
              "instrumental game music", "CC-BY-SA-3.0 (Max McCracken)", recursive=True),
    GameMusic("fillets-ng-data", "/usr/share/games/fillets-ng/music", "Fish Fillets NG", "instrumental game music",
              "GPL-2+"),
)
