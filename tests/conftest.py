"""Shared test fixtures.

Tests that need ../shared (pretrained weights, reference outputs, the face pool) are marked
`shared` and skip, saying why, only when that folder is absent. In this project's CI it is present,
so they run.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: these tests need the project's shared weights and data")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    return shared_dir / "reference"
