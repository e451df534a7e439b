"""Atomic outputs: the old file or the whole new one, never a partial; temporaries of killed writers swept."""

import os
import signal
import subprocess
import sys

import pytest

from codec.files import atomic_path, remove_stale_temporaries, write_text_atomic


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_temporaries_of_gone_writers_are_swept_and_live_ones_kept(tmp_path):
    target = tmp_path / "clip.wav"
    stale = tmp_path / f".clip.wav.{_dead_pid()}-0123456789ab.tmp.wav"
    live = tmp_path / f".clip.wav.{os.getpid()}-0123456789ab.tmp.wav"
    unrelated = tmp_path / f".other.wav.{_dead_pid()}-0123456789ab.tmp.wav"
    for path in (stale, live, unrelated):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(target, ".tmp.wav") == [stale]
    assert live.exists() and unrelated.exists() and not stale.exists()


def test_a_writer_killed_outright_leaves_a_temporary_the_next_write_removes(tmp_path):
    target = tmp_path / "tokens.safetensors"
    script = ("import os, signal, sys\nfrom codec.files import atomic_path\n"
              "with atomic_path(sys.argv[1]) as temporary:\n"
              "    temporary.write_bytes(b'x' * 1000)\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(target)])
    assert killed.returncode == -signal.SIGKILL
    assert not target.exists() and len(list(tmp_path.iterdir())) == 1  # the killed writer's temporary
    write_text_atomic(target, "complete")
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.safetensors"] and target.read_text() == "complete"
