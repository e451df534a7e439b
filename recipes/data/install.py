"""Install the Debian packages the corpus is built from, and report those that cannot be had.

Only packages that dpkg does not report as installed are requested; ``apt-get update`` runs
at most once per call and only when something is missing, so a second run installs nothing.
Each package is installed on its own after a failed batch install, so one unavailable package
never blocks the others.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CommandRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` without a shell, capturing text output; never raises on a non-zero exit."""
    try:
        return subprocess.run(list(command), capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        return subprocess.CompletedProcess(list(command), 127, "", str(error))


@dataclass
class InstallReport:
    """Outcome of :func:`ensure_packages`: names already present, newly installed, and failed."""

    already_installed: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> set[str]:
        """Packages that are installed after the call."""
        return set(self.already_installed) | set(self.installed)


def is_installed(package: str, runner: CommandRunner = run_command) -> bool:
    """True when dpkg reports ``package`` as installed (``install ok installed``)."""
    result = runner(["dpkg-query", "-W", "-f=${Status}", package])
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure_packages(
    packages: Sequence[str], runner: CommandRunner = run_command, allow_install: bool = True
) -> InstallReport:
    """Make ``packages`` installed where possible.

    Returns an :class:`InstallReport`; a package that cannot be installed (unknown name, no
    network, no permission, or ``allow_install=False``) lands in ``failed`` with the reason.
    """
    report = InstallReport()
    missing = []
    for package in dict.fromkeys(packages):
        (report.already_installed if is_installed(package, runner) else missing).append(package)
    if not missing:
        return report
    if not allow_install:
        report.failed.update({name: "not installed (installation disabled)" for name in missing})
        return report
    update = runner(["apt-get", "update"])
    if update.returncode != 0:
        reason = _last_line(update.stderr) or "apt-get update failed"
        report.failed.update({name: reason for name in missing})
        return report
    install = ["apt-get", "install", "-y", "--no-install-recommends"]
    batch = runner([*install, *missing])
    if batch.returncode == 0:
        report.installed.extend(missing)
        return report
    for package in missing:
        single = runner([*install, package])
        if single.returncode == 0 and is_installed(package, runner):
            report.installed.append(package)
        else:
            report.failed[package] = _last_line(single.stderr) or "apt-get install failed"
    return report


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
