"""Shared fixtures: the real models extracted at set-up, and photos from registry packages."""
from pathlib import Path

import pytest

from pysparse import assets

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return assets.models_dir()


def tflite_model(name: str) -> Path:
    return assets.model_path(name)
