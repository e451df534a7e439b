"""Training curves of codec stage runs, from their csv logs, as one PNG.

    python -m recipes.codec.plot_curves runs/codec-small/vocoder runs/codec-small/vae -o curves.png

Each run folder's ``logs/version_*/metrics.csv`` (``logger=csv``; a resumed run adds a version) is
read in order; every ``valid/*`` metric gets a panel with its ``train/*`` twin, against the global
step. Runs are drawn side by side, one column each.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from codec.files import atomic_path


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} from every csv log of a run, in step order (later logs win)."""
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    logs = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        raise SystemExit(f"{run_dir}: no logs/version_*/metrics.csv (train with logger=csv)")
    for log in logs:
        with open(log, newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key in ("epoch", "step") or not value:
                        continue
                    curves[key][int(float(row["step"]))] = float(value)
    return {key: sorted(points.items()) for key, points in curves.items()}


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """One column per run, one row per validation metric (with its training twin); saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {Path(run).name: read_curves(run) for run in run_dirs}
    rows = max(len([k for k in curves if k.startswith("valid/")]) for curves in runs.values()) or 1
    figure, axes = plt.subplots(rows, len(runs), figsize=(4.5 * len(runs), 2.6 * rows), squeeze=False)
    for column, (name, curves) in enumerate(runs.items()):
        metrics = sorted(k for k in curves if k.startswith("valid/"))
        for row in range(rows):
            axis = axes[row][column]
            if row >= len(metrics):
                axis.axis("off")
                continue
            metric = metrics[row]
            twin = "train/" + metric.split("/", 1)[1]
            for key, style in ((twin, ":"), (metric, "-o")):
                if key in curves:
                    steps, values = zip(*curves[key])
                    axis.plot(steps, values, style, markersize=3, label=key)
            axis.set_title(f"{name}: {metric.split('/', 1)[1]}", fontsize=9)
            axis.set_xlabel("step", fontsize=8)
            axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(out, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (run_dir of a stage)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    return plot_runs(args.runs, args.output)


if __name__ == "__main__":
    main()
