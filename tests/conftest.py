"""Shared fixtures: tiny configs whose paths all live in a temporary folder."""

from __future__ import annotations

import os

import pytest

from factories import make_tiny_config, make_training_set

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def tiny_config(tmp_path):
    return make_tiny_config(tmp_path)


@pytest.fixture
def tiny_training_set(tmp_path):
    return make_training_set(tmp_path)
