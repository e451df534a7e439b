"""The GPU script: refuses in one line where there is no CUDA device, and names real benchmark options."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_without_a_gpu_it_says_so_and_exits_2():
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "Traceback" not in result.stderr


def test_every_step_runs_an_existing_benchmark_with_options_it_accepts():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    for quick in (True, False):
        for _, command in gpu.steps(quick):
            script = SCRIPT.parent / command[0]
            assert script.is_file()
            text = script.read_text()
            for option in (part for part in command[1:] if part.startswith("--")):
                assert f'"{option}"' in text, (command[0], option)
