"""The mutation score per module from mutmut's results (run by ``make mutation``).

    python benchmarks/mutation_score.py [--names FILE] [PATTERN ...]

Reads ``mutmut results --all true`` (run in the repository root after ``mutmut run``), keeps the
mutants whose names match a PATTERN (fnmatch, as ``mutmut run`` takes them; all when none), and
prints per module: mutants checked, killed (a timeout counts as killed), survived, without tests,
the survivors listed as equivalent in ``benchmarks/MUTATION.md`` (a line ``- `NAME` ...`` in its
list of equivalent mutants), and the score = killed / (checked − equivalent) with its 95 % Wilson
interval (the error of a score from a random sample of mutants). ``--names FILE``: only the mutants
named in FILE (the sample ``mutation_sample.py`` drew).
"""

from __future__ import annotations

import fnmatch
import math
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "benchmarks" / "MUTATION.md"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}


def module_of(mutant: str) -> str:
    """``mona_tune.train.trainer.xǁTrainerǁfit__mutmut_3`` -> ``mona_tune.train.trainer``."""
    return re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]


def equivalent_mutants() -> set[str]:
    """The ``- `NAME` ...`` lines of the section "Survivors judged equivalent" of MUTATION.md."""
    if not NOTES.is_file():
        return set()
    section = NOTES.read_text().split("## Survivors judged equivalent", 1)[-1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `([^`]+__mutmut_\d+)`", section, flags=re.M))


def results() -> dict[str, str]:
    mutmut = Path(sys.executable).with_name("mutmut")
    text = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            out[name] = status
    return out


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion (a module's score from a random sample)."""
    if n == 0:
        return 0.0, 1.0
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str]) -> int:
    names = None
    if argv[:1] == ["--names"]:
        names = set(Path(argv[1]).read_text().split())
        argv = argv[2:]
    patterns = argv
    status = {k: v for k, v in results().items()
              if (names is None or k in names)
              and (not patterns or any(fnmatch.fnmatchcase(k, p) for p in patterns))}
    equivalent = equivalent_mutants()
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, s in sorted(status.items()):
        c = by_module[module_of(name)]
        if s in NOT_RUN:
            c["not run"] += 1
            continue
        c["checked"] += 1
        if s in KILLED:
            c["killed"] += 1
        elif s == "survived" and name in equivalent:
            c["equivalent"] += 1
        else:
            c["survived" if s == "survived" else "no tests" if s == "no tests" else "other"] += 1
            survivors[module_of(name)].append(f"{name} ({s})")
    head = (f"{'module':34} {'checked':>7} {'killed':>6} {'equiv':>5} {'alive':>5} {'score':>6}"
            "  95 % interval")
    print(head)
    total = Counter()
    for module, c in sorted(by_module.items()):
        total.update(c)
        print(_line(module, c))
    if len(by_module) > 1:
        print(_line("all", total))
    for module, names in sorted(survivors.items()):
        print(f"\nnot killed in {module} (not listed as equivalent):")
        for n in names:
            print(f"  {n}")
    return 0


def _line(module: str, c: Counter) -> str:
    alive = c["survived"] + c["no tests"] + c["other"]
    scored = c["checked"] - c["equivalent"]
    score = f"{100 * c['killed'] / scored:5.1f}%" if scored else "    -"
    lo, hi = wilson(c["killed"], scored)
    extra = f"  [{100 * lo:.0f}, {100 * hi:.0f}] %" if scored else ""
    extra += f"  ({c['not run']} not run)" if c["not run"] else ""
    return (f"{module:34} {c['checked']:7d} {c['killed']:6d} {c['equivalent']:5d} {alive:5d} "
            f"{score:>6}{extra}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
