"""Lookup tables with non-finite numbers are refused on load, naming the entry (issue 15.8)."""

from __future__ import annotations

import json

import pytest
from segfactory.benchmarks.lut.table import Lut
from segfactory.factory.errors import InputError


def _table(entries, overhead=None):
    return {"format": "segfactory.lut/1", "device": "x", "backend": "ort", "threads": 1, "precision": "fp32",
            "batch": 1, "input_size": [64, 64], "config": {}, "entries": entries, "overhead": overhead}


@pytest.mark.parametrize("entries, overhead, fragment", [
    ({"op|a": {"ms": float("nan")}}, None, "op|a"),
    ({"op|a": {"ms": 1.0}, "op|b": {"ms": float("inf")}}, None, "op|b"),
    ({"op|a": {"ms": 1.0, "ref_ms": float("nan")}}, None, "ref_ms"),
    ({"op|a": {"ms": 1.0}}, {"intercept_ms": float("nan"), "scale": 1.0}, "overhead"),
])
def test_non_finite_values_are_refused_naming_the_entry(tmp_path, entries, overhead, fragment):
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(_table(entries, overhead)))  # json writes NaN/Infinity, as other tools may
    with pytest.raises(InputError, match=fragment.replace("|", r"\|")):
        Lut.load(path)
