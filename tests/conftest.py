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


@pytest.fixture(scope="session")
def example_crop(shared_dir):
    """The bundled London Set example photo aligned as the pipeline aligns it: (1, 3, 128, 128) RGB in [0, 1]."""
    import torch

    from mien.cli.analyze import example_path
    from mien.face.landmarker import FaceLandmarker
    from mien.io.image import load_rgb
    from mien.pipeline import align_photo

    with FaceLandmarker() as lm:
        crop, _ = align_photo(lm, load_rgb(example_path()))
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
