"""The CRD is a contract users write YAML against: every field says what it is."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CRD = (
    Path(__file__).resolve().parents[2] / "crds/clientcredentials.tokenkeeper.dev.yaml"
)


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _fields(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _fields(schema["items"], f"{path}[]")


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_every_field_of_the_schema_has_a_description() -> None:
    # The API server allows nothing but a type at .metadata.
    undescribed = [
        path
        for path, field in _fields(_schema(), "")
        if not field.get("description") and path not in ("", ".metadata")
    ]

    assert undescribed == []


def test_metadata_has_nothing_but_its_type() -> None:
    assert _schema()["properties"]["metadata"] == {"type": "object"}


def test_the_schema_is_structural_without_preserving_unknown_fields() -> None:
    preserving = [
        path
        for path, field in _fields(_schema(), "")
        if field.get("x-kubernetes-preserve-unknown-fields")
    ]

    assert preserving == []
    assert all(field.get("type") for _, field in _fields(_schema(), ""))
