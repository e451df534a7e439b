"""The package installer, driven by a fake dpkg/apt-get (nothing is ever installed by the tests)."""

from __future__ import annotations

import subprocess

from recipes.data.install import ensure_packages, is_installed, run_command


class FakeApt:
    def __init__(self, installed: set[str], known: set[str], update_works: bool = True) -> None:
        self.installed, self.known, self.update_works = set(installed), known, update_works
        self.calls: list[list[str]] = []

    def __call__(self, command):
        command = list(command)
        self.calls.append(command)
        if command[0] == "dpkg-query":
            ok = command[-1] in self.installed
            return subprocess.CompletedProcess(command, 0 if ok else 1, "install ok installed" if ok else "", "")
        if command[1] == "update":
            return subprocess.CompletedProcess(command, 0 if self.update_works else 100, "", "E: network down")
        names = [name for name in command[2:] if not name.startswith("-")]
        unknown = [name for name in names if name not in self.known]
        if unknown:
            return subprocess.CompletedProcess(command, 100, "", f"E: Unable to locate package {unknown[0]}")
        self.installed.update(names)
        return subprocess.CompletedProcess(command, 0, "", "")


def test_installed_packages_need_no_apt() -> None:
    apt = FakeApt({"a", "b"}, set())
    report = ensure_packages(["a", "b", "a"], apt)
    assert report.already_installed == ["a", "b"] and not report.failed
    assert all(call[0] == "dpkg-query" for call in apt.calls)


def test_missing_packages_are_installed_with_one_update() -> None:
    apt = FakeApt({"a"}, {"b", "c"})
    report = ensure_packages(["a", "b", "c"], apt)
    assert report.installed == ["b", "c"] and report.available == {"a", "b", "c"}
    assert [call for call in apt.calls if call[0] == "apt-get"] == [
        ["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "b", "c"]]


def test_one_unknown_package_does_not_block_the_others() -> None:
    apt = FakeApt(set(), {"good"})
    report = ensure_packages(["good", "nonexistent"], apt)
    assert report.installed == ["good"]
    assert "Unable to locate package nonexistent" in report.failed["nonexistent"]


def test_failed_update_and_disabled_install_are_reported() -> None:
    report = ensure_packages(["x"], FakeApt(set(), {"x"}, update_works=False))
    assert report.failed == {"x": "E: network down"}
    apt = FakeApt(set(), {"x"})
    report = ensure_packages(["x"], apt, allow_install=False)
    assert "installation disabled" in report.failed["x"] and not any(c[0] == "apt-get" for c in apt.calls)


def test_real_dpkg_query_and_missing_binaries() -> None:
    assert not is_installed("no-such-package-for-the-corpus-tests")
    result = run_command(["no-such-binary-for-the-corpus-tests"])
    assert result.returncode == 127
