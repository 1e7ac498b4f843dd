"""A seeded random sample of mutmut's mutants, per module (run by ``make mutation``).

    python benchmarks/mutation_sample.py --per-module N [--seed S] PATTERN ... > NAMES

The configured modules have thousands of mutants, and every mutant is a new pytest session of the
tests that reach it (seconds to a minute each on two cores), so a full run takes hours. A simple
random sample of N mutants per module estimates each module's score with a known error
(``mutation_score.py --names NAMES`` prints a 95 % Wilson interval); N = 0 takes them all.

Mutant names come from ``mutmut results --all true``; when mutmut has not generated its mutants
yet, they are generated first (a ``mutmut run`` of a name that matches nothing, which stops after
generating the mutants and collecting the tests' statistics).
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_score import ROOT, module_of, results  # noqa: E402

NOTHING = "mona_tune.x_no_such_function__mutmut_0"


def mutant_names(patterns: list[str]) -> list[str]:
    names = sorted(results())
    if not names:
        mutmut = Path(sys.executable).with_name("mutmut")
        print("generating the mutants (mutmut run, nothing selected) ...", file=sys.stderr)
        subprocess.run([str(mutmut), "run", NOTHING], cwd=ROOT, stdout=sys.stderr,
                       stderr=subprocess.STDOUT, check=False)
        names = sorted(results())
    return [n for n in names if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def sample(names: list[str], per_module: int, seed: int) -> list[str]:
    by_module: dict[str, list[str]] = defaultdict(list)
    for n in names:
        by_module[module_of(n)].append(n)
    rng = random.Random(seed)
    out = []
    for module in sorted(by_module):
        group = by_module[module]
        out += group if per_module <= 0 or len(group) <= per_module else \
            sorted(rng.sample(group, per_module))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-module", type=int, default=0, help="mutants per module (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("patterns", nargs="*", help="fnmatch patterns of mutant names")
    args = p.parse_args(argv)
    names = mutant_names(args.patterns)
    if not names:
        print("no mutant matches", file=sys.stderr)
        return 2
    print("\n".join(sample(names, args.per_module, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
