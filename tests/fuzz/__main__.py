"""`make fuzz`: the mutation fuzzer over every parser target, then a report per target.

    python -m tests.fuzz [--inputs 1000000] [--seed 0] [--target rtp ...]

Exit status 1 when any target raised an exception outside its documented set.
"""

from __future__ import annotations

import argparse
import sys

from tests.fuzz.mutator import fuzz
from tests.fuzz.targets import TARGETS


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", action="append", choices=[t.name for t in TARGETS])
    arguments = parser.parse_args()
    failed = 0
    print(f"{'target':<16}{'inputs':>10}{'seconds':>9}{'inputs/s':>10}{'unhandled':>11}")
    for target in TARGETS:
        if arguments.target and target.name not in arguments.target:
            continue
        report = fuzz(target, arguments.inputs, seed=arguments.seed)
        rate = report.inputs / report.seconds if report.seconds else 0.0
        print(
            f"{report.target:<16}{report.inputs:>10}{report.seconds:>9.1f}"
            f"{rate:>10.0f}{report.unhandled:>11}",
            flush=True,
        )
        for data, trace in report.failures:
            print(f"  input {data!r}\n{trace}", file=sys.stderr)
        failed += report.unhandled
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
