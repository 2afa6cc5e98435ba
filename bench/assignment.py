"""Benchmark: assignments per second for a compiled Splitter (goal: well under 5 us each).

Run from the repository root: ``python bench/assignment.py [users]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns.assignment import Splitter, assign  # noqa: E402

CASES = [
    ("1 variant, 10% control", 10, [("A", 1)]),
    ("2 variants, 10% control", 10, [("A", 50), ("B", 50)]),
    ("3 variants, 2.5% control", 2.5, [("A", 1), ("B", 2), ("C", 3)]),
    ("7 variants, no control", 0, [(f"V{i}", 1) for i in range(7)]),
    ("20 variants, no control", 0, [(f"V{i}", 1) for i in range(20)]),
]


def measure(fn, keys) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for key in keys:
            fn(key)
        best = min(best, time.perf_counter() - start)
    return best / len(keys)


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    keys = [f"user-{i:08d}" for i in range(users)]
    print(f"{users:,} users, best of 3, Python {sys.version.split()[0]}")
    for label, control, variants in CASES:
        splitter = Splitter(42, control, variants)
        per_call = measure(splitter.assign, keys)
        print(f"Splitter.assign  {label:<26} {per_call * 1e6:6.2f} us  {1 / per_call:>12,.0f} /s")
    control, variants = 10, [("A", 50), ("B", 50)]
    per_call = measure(lambda key: assign(42, key, control, variants), keys)
    label = "2 variants, 10% control"
    print(f"assign()         {label:<26} {per_call * 1e6:6.2f} us  {1 / per_call:>12,.0f} /s")


if __name__ == "__main__":
    main()
