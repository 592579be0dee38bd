"""The Helm chart's CRDs are byte-identical copies of crds/, the canonical CRDs.

Why: the chart installs the CRDs from its own folder (helm/gcpcall-operator/crd-files/, read
with .Files.Get by templates/crds.yaml), because a chart cannot read files outside itself.
A copy that drifted would install another API than the one the tests prove. To update the
chart after a CRD change: cp crds/*.yaml helm/gcpcall-operator/crd-files/
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CANONICAL = REPO / "crds"
CHART_COPIES = REPO / "helm" / "gcpcall-operator" / "crd-files"
FIX = "cp crds/*.yaml helm/gcpcall-operator/crd-files/"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.yaml"))


def test_the_chart_has_a_copy_of_each_crd_and_nothing_else() -> None:
    assert names(CANONICAL), "crds/ has the CRDs"
    assert names(CHART_COPIES) == names(CANONICAL), f"the chart's CRD files differ: {FIX}"


@pytest.mark.parametrize("name", names(CANONICAL))
def test_chart_copy_is_byte_identical(name: str) -> None:
    copy = CHART_COPIES / name
    assert copy.is_file(), f"{copy.relative_to(REPO)} is missing: {FIX}"
    assert copy.read_bytes() == (CANONICAL / name).read_bytes(), f"{name} differs: {FIX}"


@pytest.mark.parametrize("name", names(CANONICAL))
def test_crd_metadata_is_what_the_chart_template_edits(name: str) -> None:
    # templates/crds.yaml inserts labels and annotations at this exact text
    text = (CANONICAL / name).read_text()
    assert f"\nmetadata:\n  name: {name.removesuffix('.yaml')}\n" in text
