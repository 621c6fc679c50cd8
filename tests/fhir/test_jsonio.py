"""FHIR JSON keeps each decimal's text (datatypes.html#decimal) while staying a number inside."""

from __future__ import annotations

import copy
import pickle

import pytest

from housecall.fhir import jsonio
from housecall.fhir.indexing import extract_index
from housecall.fhir.validation import validate_resource


@pytest.mark.parametrize(
    "text",
    [
        b"1.00",
        b"42.256500",
        b"2.5e3",
        b"1E-22",
        b"1e5",
        b"-2E3",
        b"-1.000000000000000000E+245",
        b"0.1000000000000000055511151231257827",
    ],
)
def test_decimal_text_round_trips(text: bytes) -> None:
    doc = jsonio.loads(b'{"a":[' + text + b"]}")
    assert jsonio.dumps(doc) == b'{"a":[' + text + b"]}"
    assert doc["a"][0] == float(text)
    assert jsonio.dumps(copy.deepcopy(doc)) == jsonio.dumps(pickle.loads(pickle.dumps(doc)))


def test_decimal_text_is_kept_in_pretty_printed_json() -> None:
    doc = jsonio.loads(b'{\n  "a": [\n    1.50,\n    2\n  ],\n  "b": -0.10\n}')
    assert jsonio.dumps(doc) == b'{"a":[1.50,2],"b":-0.10}'


def test_plain_numbers_stay_plain_floats() -> None:
    doc = jsonio.loads(b'{"a": 1.5, "b": 20.0, "c": 3, "d": "x: 1.00, y"}')
    assert [type(v) for v in doc.values()] == [float, float, int, str]


@pytest.mark.parametrize("bad", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e400}', b'{"a": 1.0,}'])
def test_what_is_not_json_is_refused(bad: bytes) -> None:
    with pytest.raises(jsonio.JSONDecodeError):
        jsonio.loads(bad)


def test_kept_decimals_validate_and_index_as_numbers() -> None:
    obs = jsonio.loads(
        b'{"resourceType":"Observation","id":"d","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":1.00,"unit":"g","system":"http://unitsofmeasure.org","code":"g"}}'
    )
    assert isinstance(obs["valueQuantity"]["value"], jsonio.FhirDecimal)
    assert validate_resource(obs, "Observation") == []
    rows = extract_index(obs)
    assert ("value-quantity", 1.0, "http://unitsofmeasure.org", "g", "g") in rows.quantity
    bad = jsonio.loads(b'{"resourceType":"Patient","multipleBirthInteger":2.00}')
    assert [i.path for i in validate_resource(bad, "Patient")] == ["Patient.multipleBirthInteger"]
