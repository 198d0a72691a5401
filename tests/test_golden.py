"""The shipped model's outputs for a fixed set of requests (tests/golden/make_golden.py: every edit method
and guidance kind) are identical to the recorded ones: refactoring the generation path must not change
a pixel. One torch thread, as they were made (float sums depend on the thread count)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import make_golden  # noqa: E402


@pytest.fixture(scope="module")
def regenerated(shared_dir):
    from mien.pipeline import MienPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = MienPipeline.from_pretrained()
    try:
        yield make_golden.generate_all(pipe)
    finally:
        pipe.close()
        torch.set_num_threads(threads)


@pytest.mark.shared
def test_outputs_are_identical_to_the_golden_ones(regenerated):
    golden = np.load(make_golden.GOLDEN)
    assert sorted(golden.files) == sorted(regenerated)
    differ = {name: int(np.abs(golden[name].astype(int) - regenerated[name].astype(int)).max())
              for name in golden.files if not np.array_equal(golden[name], regenerated[name])}
    assert not differ, f"outputs changed (max grey-level difference per case): {differ}"
