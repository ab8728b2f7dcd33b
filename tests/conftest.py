"""Shared fixtures. Helper functions live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """This host's lookup tables (benchmarks.lut.cache) live in a cache a test must not read nor fill: its own."""
    os.environ["SEGFACTORY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True)
def _one_thread_torch():
    """Tests run side by side on 2 cores: keep each to one intra-op thread."""
    try:
        import torch
    except ImportError:  # the agent's torch-free tests
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def camvid_mini():
    """Skip the test when the repository's camvid-mini sample is absent."""
    from segfactory.factory.datasets import camvid_mini_path
    from segfactory.factory.errors import InputError

    try:
        return camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))
