"""Checks on the spec that the schema does not make, with the sentence each gives."""

from typing import Any

import pytest
from tokenkeeper.spec import SpecError, parse_spec


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "billing", "namespace": "ns"},
        "spec": {
            "tokenURL": "https://sso.example.com/token",
            "clientID": "billing",
            "clientSecretRef": {"name": "client"},
            **spec,
        },
    }


@pytest.mark.parametrize(
    "labels",
    [
        {"app.kubernetes.io/part-of": "billing"},
        {"team": ""},
        {"a" * 63: "b" * 63},
        {"example.com/x_y.z-1": "A.b_c-9"},
    ],
)
def test_valid_template_labels_are_accepted(labels: dict[str, str]) -> None:
    spec = parse_spec(body(secretTemplate={"labels": labels}))

    assert spec.secret_template["labels"] == labels


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ({"labels": {"team/a/b": "x"}}, "key 'team/a/b' is not a valid"),
        ({"labels": {"a" * 64: "x"}}, "is not a valid Kubernetes key"),
        ({"labels": {"Example.com/x": "y"}}, "is not a valid Kubernetes key"),
        ({"labels": {"team": "-x"}}, "labels value of 'team' is not a valid"),
        ({"labels": {"team": "b" * 64}}, "labels value of 'team' is not a valid"),
        ({"annotations": {"bad key": "x"}}, "annotations key 'bad key'"),
        ({"annotations": {f"k{i}": "v" * 4096 for i in range(64)}}, "too large"),
        ({"labels": {"team": 5}}, "must map strings to strings"),
    ],
)
def test_a_template_the_api_server_would_refuse_is_an_invalid_spec(
    template: dict[str, Any], says: str
) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(body(secretTemplate=template))

    assert says in str(refused.value)


def test_annotation_keys_may_have_an_upper_case_prefix_as_the_api_server_allows() -> (
    None
):
    template = {"annotations": {"Example.COM/owner": "ops"}}

    spec = parse_spec(body(secretTemplate=template))

    assert spec.secret_template == template
