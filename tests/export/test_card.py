"""Model cards are replaced together with their file, and a reader never takes a stale card for the file."""

from __future__ import annotations

import os

import pytest
from segfactory.export import card as card_module
from segfactory.export.card import card_path, publish, read_card
from segfactory.factory.errors import InputError
from segfactory.factory.io import sha256_file


def _card_for(path):
    return {"format": card_module.FORMAT, "artefact": {"file": "m.onnx", "sha256": sha256_file(path)}}


def test_publish_places_file_and_card(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"model one")
    dst = tmp_path / "out" / "m.onnx"
    publish(src, dst, _card_for(src))
    assert dst.read_bytes() == b"model one"
    assert read_card(dst)["artefact"]["sha256"] == sha256_file(dst)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["m.onnx", "m.onnx.json"]  # no temporaries left


def test_kill_between_renames_leaves_no_stale_card(tmp_path, monkeypatch):
    """Issue 15.6: a kill between the file's and the card's rename must not pair the new file with the old card."""
    dst = tmp_path / "m.onnx"
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"model one")
    second.write_bytes(b"model two")
    publish(first, dst, _card_for(first))
    real_replace = os.replace
    calls = []

    def killed_after_first(src, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for kill -9 after the file's rename
        real_replace(src, target)

    monkeypatch.setattr(os, "replace", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        publish(second, dst, _card_for(second))
    monkeypatch.setattr(os, "replace", real_replace)
    assert dst.read_bytes() == b"model two"
    assert read_card(dst) is None  # no card rather than the other model's card
    assert not card_path(dst).exists()


def test_stale_card_is_reported_plainly(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"model one")
    dst = tmp_path / "m.onnx"
    publish(src, dst, _card_for(src))
    dst.write_bytes(b"replaced by hand")
    with pytest.raises(InputError, match="stale"):
        read_card(dst)
