"""The synthetic world as a source family, so the builder treats it like any recording source."""

from __future__ import annotations

from dataclasses import dataclass

from recipes.data.recording import Recording
from recipes.data.sources.base import Job, Problems
from recipes.data.world.generator import KINDS, WORLD_PACKAGE, WorldClip, plan_world, render_world_clip
from recipes.data.world.midi import fluidsynth_available
from recipes.data.world.speech import festival_available

TOOL_PACKAGES = {"fluidsynth": ("fluidsynth", "fluidr3mono-gm-soundfont"),
                 "festival": ("festival", "festvox-kallpc16k", "festvox-us-slt-hts")}


def tool_available(tool: str) -> bool:
    """True when the external ``tool`` (``fluidsynth`` or ``festival``) can render here."""
    if tool == "fluidsynth":
        return fluidsynth_available()
    return festival_available("kal") and festival_available("slt")


@dataclass(frozen=True)
class SyntheticWorld:
    """``clips`` planned clips of world ``seed``, each ``min_seconds``..``max_seconds`` long."""

    clips: int
    seed: int
    min_seconds: float = 3.0
    max_seconds: float = 8.0
    kinds: tuple[str, ...] | None = None
    name: str = "world"

    def __post_init__(self) -> None:
        if self.clips < 0 or not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"bad synthetic world: {self.clips} clips of {self.min_seconds}..{self.max_seconds} s")
        unknown = sorted(set(self.kinds or ()) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown synthetic kinds {unknown}; expected some of {tuple(KINDS)}")

    @property
    def packages(self) -> tuple[str, ...]:
        """The Debian packages of the external renderers (MIDI and Festival kinds need them)."""
        return tuple(package for packages in TOOL_PACKAGES.values() for package in packages)

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """One job per planned clip; kinds whose tool is missing are reported once and skipped."""
        missing_tools = {tool for tool in TOOL_PACKAGES if not tool_available(tool)}
        for tool in sorted(missing_tools):
            problems.messages.append(f"{tool} is not usable: synthetic kinds needing it are skipped")
        jobs = []
        for clip in plan_world(self.clips, self.seed, self.kinds):
            if KINDS[clip.kind][2] in missing_tools:
                continue
            jobs.append(Job(self.name, WORLD_PACKAGE, clip.item, (clip.item,), clip.split,
                            {"index": clip.index, "seed": clip.seed, "kind": clip.kind}))
        return jobs

    def render(self, job: Job) -> Recording:
        """Render one planned clip."""
        clip = WorldClip(job.args["index"], job.args["seed"], job.args["kind"], job.items[0], job.split)
        return render_world_clip(clip, self.min_seconds, self.max_seconds)
