"""The shared name-keyed registry: duplicates raise, misses list the known names, order is kept, read-only mapping."""

import pytest
from segfactory.factory.registry import Registry


def test_register_get_names_help_and_mapping_view():
    r: Registry[int] = Registry("thing")
    r.register("b", 2, help="the second")

    @r.register("a")
    def make_a() -> int:
        return 1

    assert r.get("a") is make_a and r["b"] == 2 and r.help("b") == "the second"
    assert r.names() == ["b", "a"] and list(r) == ["b", "a"] and len(r) == 2  # registration order
    assert "a" in r and "c" not in r and dict(r.items()) == {"b": 2, "a": make_a}


def test_duplicate_raises_and_keeps_the_first():
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        r.register("a", 2)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a")(lambda: 3)
    assert r.get("a") == 1


def test_miss_lists_known_names():
    r: Registry[int] = Registry("thing")
    with pytest.raises(KeyError, match=r"unknown thing 'x'; known: \(none\)"):
        r.get("x")
    r.register("a", 1)
    r.register("b", 2)
    with pytest.raises(KeyError, match="unknown thing 'x'; known: a, b"):
        r["x"]
    with pytest.raises(KeyError, match="known: a, b"):
        r.help("x")


def test_temporary_entry_is_gone_after_the_block_even_on_error():
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    with r.temporary("t", 9, help="for one block") as obj:
        assert obj == 9 and r.names() == ["a", "t"] and r.help("t") == "for one block"
    with pytest.raises(RuntimeError), r.temporary("t", 8):
        raise RuntimeError("inside")
    assert r.names() == ["a"]
    with pytest.raises(ValueError, match="already registered"), r.temporary("a", 2):
        pass
    assert r["a"] == 1  # a clash leaves the entry it met
