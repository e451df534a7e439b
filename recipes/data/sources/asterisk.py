"""Real speech: the Asterisk telephony prompts (16 kHz G.722) with their transcripts.

Each language has an audio package (``asterisk-core-sounds-<lang>-g722``) whose prompts live in
the real voice folder ``/usr/share/asterisk/sounds/<lang>_<REGION>_<f|m>_<Name>`` and a text
package (``asterisk-core-sounds-<lang>``) with ``key: text`` lines. Prompts whose text is in
square brackets are tones, not speech, and are left out; prompts without a text line are kept
without a transcript.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

from recipes.data.audio import decode_audio
from recipes.data.recording import Recording
from recipes.data.sources.base import Job, Problems, item_job, list_files


@dataclass(frozen=True)
class AsteriskSpeech:
    """One language of the Asterisk prompts."""

    language: str  # ISO 639-1
    language_name: str
    voice_folder: str
    transcripts: str  # the gzip text file of the text package
    speaker: str
    sex: str  # "female" or "male"
    licence: str
    name: str = "asterisk"

    @property
    def audio_package(self) -> str:
        """The Debian package with the G.722 prompts."""
        return f"asterisk-core-sounds-{self.language}-g722"

    @property
    def text_package(self) -> str:
        """The Debian package with the transcripts."""
        return f"asterisk-core-sounds-{self.language}"

    @property
    def packages(self) -> tuple[str, ...]:
        """Audio, text and ffmpeg (the G.722 decoder); without text, prompts have no transcript."""
        return (self.audio_package, self.text_package, "ffmpeg")

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per prompt file of the audio package."""
        for needed in (self.audio_package, "ffmpeg"):
            if needed not in available:
                problems.missing_packages.setdefault(needed, "not installed")
                return []
        texts = {}
        if self.text_package in available:
            try:
                texts = read_transcripts(self.transcripts)
            except (OSError, ValueError, EOFError) as error:
                problems.messages.append(f"{self.transcripts}: transcripts unreadable ({error}); kept without text")
        else:
            problems.missing_packages.setdefault(self.text_package, "not installed; prompts kept without text")
        jobs = []
        for path in list_files(self.voice_folder, (".g722",), recursive=True):
            key = os.path.relpath(path, self.voice_folder)[: -len(".g722")]
            text = texts.get(key)
            if text is not None and text.startswith("["):
                continue  # a described tone such as "[beep tone]", not speech
            jobs.append(item_job(self.name, self.audio_package, path, transcript=text, prompt=key))
        return jobs

    def render(self, job: Job) -> Recording:
        """Decode one G.722 prompt; the caption quotes the transcript when there is one."""
        wave = decode_audio(job.items[0], job.items[0], input_format="g722")
        who = "a woman" if self.sex == "female" else "a man"
        plain = f"{who} speaking {self.language_name}"
        transcript = job.args.get("transcript")
        caption = f'{who} says in {self.language_name}: "{transcript}"' if transcript else plain
        return Recording(wave, "speech", ["speech", f"{self.sex} speech", self.language_name], caption,
                         self.licence, list(job.items), transcript=transcript, language=self.language,
                         speaker=self.speaker, params={"prompt": job.args.get("prompt")}, piece_caption=plain)


def read_transcripts(path: str | os.PathLike[str]) -> dict[str, str]:
    """{prompt key: text} from an Asterisk ``core-sounds-<lang>.txt.gz`` file.

    Comment lines (``;``), empty lines and lines without a colon are ignored; a byte-order mark
    is allowed.
    """
    with gzip.open(Path(path), "rt", encoding="utf-8-sig", errors="replace") as handle:
        lines = handle.read().splitlines()
    texts = {}
    for line in lines:
        line = line.strip().lstrip("\ufeff")
        if not line or line.startswith(";") or ":" not in line:
            continue
        key, text = line.split(":", 1)
        if key.strip() and text.strip():
            texts[key.strip()] = " ".join(text.split())
    return texts


ASTERISK_LANGUAGES = (
    AsteriskSpeech("en", "English", "/usr/share/asterisk/sounds/en_US_f_Allison",
                   "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "allison_smith", "female",
                   "CC-BY-SA-3.0 (Allison Smith / Digium)"),
    AsteriskSpeech("es", "Spanish", "/usr/share/asterisk/sounds/es_MX_f_Allison",
                   "/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz", "allison_smith", "female",
                   "CC-BY-SA-3.0 (Allison Smith / Digium)"),
    AsteriskSpeech("it", "Italian", "/usr/share/asterisk/sounds/it_IT_m_Carlo",
                   "/usr/share/doc/asterisk-core-sounds-it/core-sounds-it.txt.gz", "carlo_flora", "male",
                   "CC-BY-3.0 (Carlo Flora)"),
)
