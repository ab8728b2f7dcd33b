import json
import random

import pytest
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import (
    MERGE_NAMES,
    OP_NAMES,
    Genotype,
    action_labels,
    action_space,
    load_genotype,
    sample_genotype,
)
from segfactory.factory.zoo import ZOO, resolve_arch

from tests.helpers import random_genotypes

GENOTYPES = list(ZOO.values()) + random_genotypes(50)


@pytest.mark.parametrize("genotype", GENOTYPES, ids=lambda g: g.key())
def test_json_round_trip_keeps_key(genotype):
    again = Genotype.from_json(genotype.to_json())
    assert again == genotype and again.key() == genotype.key()
    assert json.loads(genotype.to_json())["format"] == "segfactory.genotype/1"


@pytest.mark.parametrize("genotype", GENOTYPES, ids=lambda g: g.key())
def test_actions_round_trip(genotype):
    actions = genotype.to_actions()
    assert len(actions) == 44 == len(action_space()) == len(action_labels())
    assert all(0 <= a < n for a, n in zip(actions, action_space()))
    assert Genotype.from_actions(actions) == genotype


def test_action_space_matches_method():
    sizes = action_space()
    assert sizes[:9] == [6, 6, 2] * 3
    assert sizes[9:14] == [2, 2, 3, 4, 2] and sizes[-5:] == [8, 8, 3, 4, 1]


def test_key_is_stable_and_distinguishes():
    assert ZOO["arch0"].key() == Genotype.from_dict(ZOO["arch0"].to_dict()).key()
    assert len({g.key() for g in GENOTYPES}) == len(GENOTYPES)
    # The key is a hash of the genotype's normal form only (issue 11; it was "441c19258e6f", the genotype as
    # written): a pinned value catches accidental changes.
    assert ZOO["arch0"].key() == "00ee25548308"


def test_ids_are_accepted_on_input():
    d = ZOO["arch1"].to_dict()
    d["templates"] = [[OP_NAMES.index(a), OP_NAMES.index(b), MERGE_NAMES.index(m)] for a, b, m in d["templates"]]
    assert Genotype.from_dict(d) == ZOO["arch1"]


def test_collected_loose_ends_match_method():
    assert ZOO["arch0"].collected() == [4, 6, 7, 8]
    assert ZOO["arch1"].collected() == [5, 6, 7, 8]


def _with(path, value):
    d = json.loads(ZOO["arch0"].to_json())
    target = d
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    "data, message",
    [
        (_with(["layers", 3, 0], 9), "layers[3].input_1=9 is out of range 0..4"),
        (_with(["layers", 0, 1], 2), "layers[0].input_2=2 is out of range 0..1"),
        (_with(["layers", 2, 2], 3), "layers[2].template=3 is out of range 0..2"),
        (_with(["layers", 1, 3], 0), "layers[1].repeats=0 is out of range 1..4"),
        (_with(["layers", 1, 3], 5), "layers[1].repeats=5 is out of range 1..4"),
        (_with(["layers", 4, 4], 2), "layers[4].stride=2 is only allowed in layers 0..2"),
        (_with(["layers", 0, 4], 3), "layers[0].stride=3 must be 1 or 2"),
        (_with(["templates", 1, 0], "conv_7x7"), "templates[1].op_a='conv_7x7' is not an op"),
        (_with(["templates", 2, 2], "sum"), "templates[2].merge='sum' is not a merge"),
        (_with(["templates", 0, 1], 6), "templates[0].op_b=6 is out of range 0..5"),
        (_with(["layers", 0, 0], "0"), "layers[0].input_1='0' is not an integer"),
        (_with(["format"], "other/2"), "format='other/2'"),
        ({"templates": [], "layers": []}, "templates has 0 entries, expected 3"),
        ({"templates": ZOO["arch0"].to_dict()["templates"]}, "missing the field 'layers'"),
        (_with(["layers", 5], [1, 2, 3]), "layers[5]=[1, 2, 3] must be"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_validation_names_field_and_value(data, message):
    with pytest.raises(InputError) as e:
        Genotype.from_dict(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_from_actions_rejects_out_of_range():
    actions = ZOO["arch0"].to_actions()
    actions[9] = 2  # l0.input_1 has 2 choices
    with pytest.raises(InputError, match=r"actions\[9\] \(l0.input_1\)=2 is out of range 0..1"):
        Genotype.from_actions(actions)


def test_sample_is_seeded_and_valid():
    a = [sample_genotype(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({sample_genotype(random.Random(s)).key() for s in range(20)}) == 20


def test_load_and_resolve(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(ZOO["arch1"].to_json())
    assert load_genotype(path) == ZOO["arch1"]
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"format": "segfactory.best/1", "genotype": ZOO["arch0"].to_dict(), "reward": 0.5}))
    assert resolve_arch(str(best)) == ZOO["arch0"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json is not valid JSON"):
        resolve_arch(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match="unknown architecture 'arch9'"):
        resolve_arch("arch9")


def test_genotype_is_frozen():
    with pytest.raises(AttributeError):
        ZOO["arch0"].layers = ()  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [(4, 1.0), (4, 2.0), (3, 2.0), (0, 1.0), (4, True), (4, "2")])
def test_layer_numbers_must_be_integers(field, value):
    """Issue 15.4: a float stride passed validation and failed later with a raw TypeError (exit 1)."""
    from segfactory.factory.errors import InputError
    from segfactory.factory.zoo import ZOO

    data = ZOO["arch0"].to_dict()
    data["layers"][0][field] = value
    with pytest.raises(InputError):
        Genotype.from_dict(data)


def test_actions_must_be_integers():
    from segfactory.factory.errors import InputError
    from segfactory.factory.zoo import ZOO

    actions = ZOO["arch0"].to_actions()
    actions[3] = 1.0
    with pytest.raises(InputError, match="not an integer"):
        Genotype.from_actions(actions)
