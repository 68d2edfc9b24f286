"""Plot the echo benchmark: grouped bars of each library's ratio to picows, per size.

One panel per mode and event loop; the dashed line at 1.0 is picows.

    python benchmarks/plot.py [results/echo.json [results/echo.png]]

``echo.py`` calls :func:`plot_echo` itself after a run; this script redraws a plot
from a saved JSON file.  Needs matplotlib (in the ``bench`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402

import _harness  # noqa: E402

COLOURS = {
    "anynet": "#d62728",
    "anynet-callback": "#ff7f0e",
    "websockets": "#1f77b4",
    "aiohttp": "#2ca02c",
    "raw": "#7f7f7f",
}


def plot_echo(results: dict[str, Any], path: Path) -> None:
    """Write the PNG for one echo run's results (the dict echo.py saves as JSON)."""
    cells = results["cells"]
    # One row of panels per mode and pinning (results before pinning existed are unpinned).
    modes = list(dict.fromkeys((cell["mode"], cell.get("pinning", "unpinned")) for cell in cells))
    loops = list(dict.fromkeys(cell["loop"] for cell in cells))
    compared = [library for library in results["libraries"] if library != _harness.REFERENCE]
    if _harness.REFERENCE not in results["libraries"] or not compared:
        print(
            "no plot: it shows ratios to picows, so it needs picows and another library",
            file=sys.stderr,
        )
        return

    figure, axes = plt.subplots(
        len(modes),
        len(loops),
        figsize=(max(9, 6 * len(loops)), 3.2 * len(modes) + 0.6),
        squeeze=False,
        sharey=True,
    )
    titles = results.get("mode_titles", {})
    width = 0.8 / len(compared)
    for row, (mode, pinning) in enumerate(modes):
        for column, loop in enumerate(loops):
            axis = axes[row][column]
            panel = [
                cell
                for cell in cells
                if (cell["mode"], cell.get("pinning", "unpinned")) == (mode, pinning)
                and cell["loop"] == loop
            ]
            for index, library in enumerate(compared):
                ratios = [cell["ratio_to_picows"][library] or 0.0 for cell in panel]
                positions = [
                    x + (index - (len(compared) - 1) / 2) * width for x in range(len(panel))
                ]
                axis.bar(positions, ratios, width, label=library, color=COLOURS.get(library))
            axis.axhline(1.0, color="black", linestyle="--", linewidth=1, label="picows")
            axis.set_xticks(range(len(panel)))
            axis.set_xticklabels([_harness.size_label(cell["size"]) for cell in panel])
            axis.set_title(f"{titles.get(mode, mode)}, {loop}, {pinning}")
            if column == 0:
                axis.set_ylabel("× picows (msg/s)")
            axis.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="upper left", fontsize="small")
    repeats = _harness.plural(results["settings"]["repeats"], "repeat")
    machine = results["machine"]
    figure.suptitle(
        "Echo round trips per second relative to picows\n"
        f"(median of {repeats}; {machine['cpu']}, {machine['cores']} cores)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    source = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else _harness.BENCHMARKS / "results" / "echo.json"
    )
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".png")
    plot_echo(json.loads(source.read_text()), target)
    print(target)


if __name__ == "__main__":
    main()
