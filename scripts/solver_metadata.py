"""Print the metadata every solver declares (its defaults' values) as a Markdown table.

    python scripts/solver_metadata.py

The values are read from the classes (``sd.make_solver(name)``); tests/test_sampling.py checks the
declared NFE against the counted one for every solver, tests/test_noise.py the strong orders.
"""

from __future__ import annotations

import scoresde as sd

COLUMNS = ("order", "nfe_per_step", "stochastic", "fixed_grid", "per_sample_seeds")


def main() -> None:
    print("| solver | " + " | ".join(COLUMNS) + " | nfe(10) |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for name in sd.SOLVERS:
        algo = sd.make_solver(name)
        cells = ["—" if getattr(algo, c) is None else f"{getattr(algo, c)}" for c in COLUMNS]
        nfe = algo.nfe(10)
        print(f"| `{name}` | " + " | ".join(cells) + f" | {'—' if nfe is None else nfe} |")


if __name__ == "__main__":
    main()
