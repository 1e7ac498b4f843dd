"""LICENSE and CITATION.cff agree with the package: its version, its licence, the method's paper."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

import mona_tune

ROOT = Path(__file__).resolve().parents[2]


def test_citation_names_this_version_its_licence_and_the_method_s_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == project["version"] == mona_tune.__version__
    assert cff["license"] == project["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Learning Modality Knowledge Alignment for Cross-Modality Transfer"
    assert [a["family-names"] for a in paper["authors"]] == ["Ma", "Li", "Cai", "Kang"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in licence
