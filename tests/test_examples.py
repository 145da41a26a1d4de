"""The examples run and do what they claim (at a tiny size)."""

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# A tiny run (24x24 canvas, 8x8 digits) must beat copying the last frame by this factor; over seeds 0-4 it
# lands at about 0.5-0.6x of it.
NOWCAST_MAX_RATIO = 0.8


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0])
def test_nowcast_digits_beats_copying_the_last_frame(tmp_path, seed):
    pytest.importorskip("sklearn", reason="the demo's digits come from scikit-learn (pip install scikit-learn)")
    demo = _load_example("nowcast_digits")
    result = demo.main(["--size", "24", "--steps", "80", "--val", "64", "--threads", "1", "--seed", str(seed),
                        "--out", str(tmp_path)])
    losses = [result["val_mse"], result["copy_last_mse"], result["empty_mse"], *result["history"]["train_bce"]]
    assert all(math.isfinite(v) for v in losses)
    assert result["val_mse"] < NOWCAST_MAX_RATIO * result["copy_last_mse"], result
    for name in ("nowcast_digits.png", "nowcast_digits_loss.png"):
        assert (tmp_path / name).stat().st_size > 1000
