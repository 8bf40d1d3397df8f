"""The vendored conformance vectors are exactly the upstream files: never edited, nothing added."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.rtvbp.vectors import VECTORS_DIR, vendored_files

CHECKSUMS = VECTORS_DIR.parent / "rtvbp.sha256"
# Where CI keeps the upstream conformance vectors: a `shared/conformance/rtvbp` directory beside
# the checkout. Without it the byte-for-byte comparison is skipped.
UPSTREAM_DIR = VECTORS_DIR.parents[3] / "shared" / "conformance" / "rtvbp"


def _listed() -> dict[Path, str]:
    listed: dict[Path, str] = {}
    for line in CHECKSUMS.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[Path(name)] = digest
    return listed


def test_checksum_list_names_every_vendored_file() -> None:
    assert sorted(_listed()) == vendored_files()
    assert len(vendored_files()) == 69


@pytest.mark.parametrize("relative", sorted(_listed()), ids=str)
def test_vendored_file_matches_checksum(relative: Path) -> None:
    data = (VECTORS_DIR.parent / relative).read_bytes()
    assert hashlib.sha256(data).hexdigest() == _listed()[relative]


@pytest.mark.skipif(not UPSTREAM_DIR.is_dir(), reason="no shared upstream copy next to the repo")
def test_vendored_files_are_byte_identical_to_upstream() -> None:
    upstream = sorted(
        path.relative_to(UPSTREAM_DIR) for path in UPSTREAM_DIR.rglob("*") if path.is_file()
    )
    vendored = [path.relative_to("rtvbp") for path in vendored_files()]
    assert vendored == upstream
    for relative in upstream:
        assert (VECTORS_DIR / relative).read_bytes() == (UPSTREAM_DIR / relative).read_bytes(), (
            relative
        )
