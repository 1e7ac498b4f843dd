"""The project's locks (locks/dev.txt, locks/runtime.txt), read as pip reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "locks" / "dev.txt"
RUNTIME = ROOT / "locks" / "runtime.txt"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+?)\s*(?:;\s*(.*?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    marker: str | None
    hashes: tuple[str, ...]

    def applies_here(self) -> bool:
        return self.marker is None or Marker(self.marker).evaluate()


def read_lock(path: Path) -> list[Pin]:
    """The pins of a ``uv pip compile --generate-hashes`` file, each with its marker and hashes."""
    pins: list[Pin] = []
    current: tuple[str, str, str | None] | None = None
    hashes: list[str] = []
    for line in path.read_text().splitlines() + [""]:
        stripped = line.strip()
        m = _PIN.match(line)
        if m or not line.startswith(" "):
            if current is not None:
                pins.append(Pin(*current, tuple(hashes)))
                current, hashes = None, []
        if m:
            current = (canonicalize_name(m.group(1)), m.group(2), m.group(3))
        elif stripped.startswith("--hash=sha256:"):
            hashes.append(stripped.split(":", 1)[1].rstrip(" \\"))
    return pins


def pinned_here(path: Path) -> dict[str, str]:
    """name -> version of the pins whose markers hold on this machine."""
    return {p.name: p.version for p in read_lock(path) if p.applies_here()}
