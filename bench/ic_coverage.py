"""Coverage of the IC interval when the population IC is not 0 (docs/methodology.md).

    .venv/bin/python bench/ic_coverage.py --records 4000

Simulated records with a persistent edge of known population IC (the generator of
`sensequant_tests/test_ml_inference.py`), for several persistences and strengths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensequant_assets.ml.stats import rank_ic_test
from sensequant_tests.test_ml_inference import H, _persistent_edge

SETTINGS = ((0.99, 0.02), (0.95, 0.05), (0.9, 0.08), (0.8, 0.1), (0.5, 0.2), (0.95, 0.1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--rows", type=int, default=2340)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("| AR(1) coefficient | daily shift | population IC | coverage |")
    print("| ---: | ---: | ---: | ---: |")
    for rho, c in SETTINGS:
        score, forward = _persistent_edge(400_000, rho, c, rng)
        true = spearmanr(score, forward).statistic
        covered = 0
        for _ in range(args.records):
            test = rank_ic_test(*_persistent_edge(args.rows, rho, c, rng), horizon=H)
            covered += test["ci_low"] <= true <= test["ci_high"]
        print(f"| {rho} | {c} | {true:.3f} | {100 * covered / args.records:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
