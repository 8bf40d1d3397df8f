"""Loading the vendored RTVBP conformance vectors (tests/conformance/rtvbp, never edited).

Shared by the codec tests and the scenario tests: import it as ``vectors`` from tests/rtvbp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR: Path = Path(__file__).resolve().parents[1] / "conformance" / "rtvbp"
CATALOG_NAMES: tuple[str, ...] = ("babelforce.v1", "demo.v1")


def load_json(relative: str | Path) -> Any:
    """Parse one vector file, given relative to VECTORS_DIR."""
    return json.loads((VECTORS_DIR / relative).read_bytes())


def read_bytes(relative: str | Path) -> bytes:
    return (VECTORS_DIR / relative).read_bytes()


def vendored_files() -> list[Path]:
    """Every vendored file, relative to VECTORS_DIR's parent (as listed in rtvbp.sha256)."""
    root = VECTORS_DIR.parent
    return sorted(path.relative_to(root) for path in VECTORS_DIR.rglob("*") if path.is_file())


def golden_files() -> list[Path]:
    """The babelforce.v1 golden fixtures, relative to the golden directory."""
    golden = VECTORS_DIR / "babelforce.v1" / "golden"
    return sorted(path.relative_to(golden) for path in golden.rglob("*.json"))


def golden_bytes(relative: str | Path) -> bytes:
    return (VECTORS_DIR / "babelforce.v1" / "golden" / relative).read_bytes()


def payload_vector_files(catalog: str) -> list[Path]:
    """``<catalog>/payloads/<method>.json``, relative to VECTORS_DIR."""
    return sorted(
        path.relative_to(VECTORS_DIR) for path in (VECTORS_DIR / catalog).glob("payloads/*.json")
    )


def payload_cases(catalog: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every payload case as (method, side "request"|"response", schema name, case)."""
    cases: list[tuple[str, str, str, dict[str, Any]]] = []
    for relative in payload_vector_files(catalog):
        document = load_json(relative)
        for side in ("request", "response"):
            section = document[side]
            for case in section["valid"] + section["invalid"]:
                cases.append((document["method"], side, section["schema"], case))
    return cases


def frame_vectors(catalog: str) -> dict[str, Any]:
    """The classic.v1 envelope vectors of a catalog: keys ``encode``, ``decode``, ``invalid``."""
    result: dict[str, Any] = load_json(Path(catalog) / "envelope" / "classic.v1" / "frames.json")
    return result


def scenario_files(catalog: str) -> list[Path]:
    """``<catalog>/scenarios/*.json``, relative to VECTORS_DIR."""
    return sorted(
        path.relative_to(VECTORS_DIR) for path in (VECTORS_DIR / catalog).glob("scenarios/*.json")
    )


def scenario_cases(catalog: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every scenario case as (id "<file>/<case>", scenario document, case)."""
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for relative in scenario_files(catalog):
        document = load_json(relative)
        for case in document["cases"]:
            cases.append((f"{relative.stem}/{case['name']}", document, case))
    return cases


def negotiation_vectors() -> dict[str, Any]:
    """``profiles/negotiation.json``: keys ``valid`` and ``invalid``."""
    result: dict[str, Any] = load_json("profiles/negotiation.json")
    return result


def float_vectors() -> list[dict[str, Any]]:
    """``authority/go-float64-boundaries.json``: {name, bits, json} or {name, bits, rejects}."""
    result: list[dict[str, Any]] = load_json("babelforce.v1/authority/go-float64-boundaries.json")
    return result
