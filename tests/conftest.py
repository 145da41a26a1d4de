"""Test configuration: seeds, devices, the Triton interpreter on machines without a GPU.

Every test draws fresh random inputs from its own generator, seeded from the
session's base seed and the test's id.  The base seed is random per session
(printed in pytest's header) unless CONVGRU_TEST_SEED fixes it, so a failure
can be replayed with ``CONVGRU_TEST_SEED=<seed> pytest <test id>``.
"""

import hashlib
import os
import random

import torch

# Without a GPU, Triton kernels run on the CPU through the interpreter; it must
# be chosen before any @triton.jit function is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Each Triton kernel runs its first configuration instead of autotuning (on a GPU, timing every
# configuration for every test shape would take most of the run); tests/test_triton.py runs
# every configuration on its own.
os.environ.setdefault("CONVGRU_TRITON_AUTOTUNE", "0")

import pytest  # noqa: E402

# Hypothesis (tests/test_properties.py): the profile named by CONVGRU_HYPOTHESIS_PROFILE, "ci" (the default,
# bounded) or "long".  Draws are random per run (derandomize=False); a failure prints its shrunk example and a
# @reproduce_failure blob, `pytest --hypothesis-seed=N` fixes a run's draws, and failing examples are saved in
# .hypothesis/ (which hypothesis git-ignores itself) and replayed first on the next run.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # test_properties.py skips itself
    pass
else:
    _hypothesis_settings.register_profile("ci", max_examples=120, deadline=None, derandomize=False,
                                          print_blob=True)
    _hypothesis_settings.register_profile("long", parent=_hypothesis_settings.get_profile("ci"), max_examples=1600)
    _hypothesis_settings.load_profile(os.environ.get("CONVGRU_HYPOTHESIS_PROFILE", "ci"))

BASE_SEED = int(os.environ.get("CONVGRU_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [f"convgru-ext: CONVGRU_TEST_SEED={BASE_SEED}  torch {torch.__version__}  GPU: {gpu}  "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}"]


def _seed_for(nodeid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{BASE_SEED}:{nodeid}".encode()).digest()[:4], "little")


# The tests' tensors are tiny: one intra-op thread is as fast, and immune to the oversubscription
# (other processes on the 2 CI cores, the DDP test's workers) that makes OpenMP barriers spin for
# milliseconds and has turned a 3-second gradcheck into a 6-minute one.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _exact_float32():
    """REL_TOL[float32] assumes exact float32 (TF32 tests opt in inside their own body)."""
    from convgru_ext.testing import exact_float32

    with exact_float32():
        yield


@pytest.fixture(autouse=True)
def _seed_torch(request):
    torch.manual_seed(_seed_for(request.node.nodeid))


@pytest.fixture
def rng(request) -> torch.Generator:
    """A CPU generator private to this test."""
    return torch.Generator().manual_seed(_seed_for(request.node.nodeid) + 1)
