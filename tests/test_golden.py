"""The shipped model's outputs for a fixed set of requests (tests/golden/make_golden.py: every edit method
and guidance kind) are identical to the recorded ones: refactoring the generation path must not change
a pixel. One torch thread, as they were made (float sums depend on the thread count).

Bit for bit against this CPU kind's own recording where one exists (make_golden.machine_golden); on
another kind, against the reference recording within what a CPU kind changes (make_golden's docstring):
at most 3 grey levels per pixel (an AMD EPYC of family 26 differs from it by 3 on one case), except the
blendshape-guided case, whose mean difference must stay under 4 levels (a refactoring slip moves far more)."""

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


# cases whose guidance amplifies float-rounding differences between CPU kinds (make_golden's docstring)
CHAOTIC = {"fearful_default"}


@pytest.mark.shared
def test_outputs_are_identical_to_the_golden_ones(regenerated):
    own = make_golden.machine_golden()
    if not own.exists():
        pytest.skip(f"no recording for this CPU kind ({own.name}); test_outputs_match_the_reference_recording checks")
    golden = np.load(own)
    assert sorted(golden.files) == sorted(regenerated)
    differ = {name: int(np.abs(golden[name].astype(int) - regenerated[name].astype(int)).max())
              for name in golden.files if not np.array_equal(golden[name], regenerated[name])}
    assert not differ, f"outputs changed (max grey-level difference per case): {differ}"


@pytest.mark.shared
def test_outputs_match_the_reference_recording(regenerated):
    golden = np.load(make_golden.GOLDEN)
    assert sorted(golden.files) == sorted(regenerated)
    off = {}
    for name in golden.files:
        diff = np.abs(golden[name].astype(int) - regenerated[name].astype(int))
        if name in CHAOTIC:
            if diff.mean() >= 4.0:
                off[name] = f"mean {diff.mean():.2f}"
        elif diff.max() > 3:
            off[name] = f"max {int(diff.max())}"
    assert not off, f"outputs changed beyond what a CPU kind explains (grey levels per case): {off}"


def test_evaluation_records_name_the_cpu_kind_the_golden_file_is_keyed_by():
    # runs compare output for output only within one CPU kind (mien.machine): the evaluation record and the golden
    # recording must name it alike, or a record cannot be matched to the recording its outputs are checked against
    from mien.evaluate.run import versions

    kind = versions()["cpu"]
    assert make_golden.machine_golden().name == f"golden-{kind}.npz"
    assert torch.backends.cpu.get_cpu_capability() in kind
