"""An installed wheel carries what the CUDA backend's JIT build needs: its sources and flags; and the CPU extension.

Builds the wheel as a user's ``pip install .`` would (without the prebuilt CUDA extension), installs it
into a fresh venv that borrows this interpreter's torch, and asks the installed package where its
sources are.  Without a GPU the JIT build stops at "no CUDA device", never at missing files.
"""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

import convgru_ext
from convgru_ext import _build

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: run inside the fresh venv: what the installed package's build description resolves to
PROBE = r"""
import json, pathlib
import convgru_ext
from convgru_ext import _build
from convgru_ext.backends import cuda, torch_fallback
print(json.dumps({
    "cpu_loop": torch_fallback.NATIVE.error,
    "package": str(pathlib.Path(convgru_ext.__file__).parent),
    "version": convgru_ext.__version__,
    "sources_dir": str(_build.sources_dir()),
    "sources": _build.sources(),
    "options": _build.build_options(),
    "reason": cuda.load_extension(),
}))
"""


def _build_wheel(out: pathlib.Path) -> pathlib.Path:
    """The wheel of the checkout, without the prebuilt CUDA extension (one test builds it: pytest-xdist
    workers building in the same checkout at once would share setuptools' build folder)."""
    env = dict(os.environ, CONVGRU_SKIP_CUDA="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
                    "-w", str(out), str(ROOT)], check=True, env=env, cwd=out)
    (found,) = out.glob("convgru_ext-*.whl")
    return found


def test_an_installed_wheel_finds_its_cuda_sources_and_flags(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("convgru_ext/_csrc/") for n in names if n.startswith("convgru_ext/_csrc/")}
    in_checkout = {p.relative_to(ROOT / "csrc").as_posix() for pattern in _build.SOURCE_PATTERNS
                   for p in (ROOT / "csrc").glob(pattern)}
    assert in_checkout and shipped == in_checkout
    assert "convgru_ext/_build.py" in names
    built = [n for n in names if n.endswith((".so", ".pyd"))]
    assert len(built) == 1 and built[0].startswith("convgru_ext/_cpu."), f"SKIP_CUDA: _cpu alone, got {built}"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = pathlib.Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                       check=True, capture_output=True, text=True).stdout.strip())
    # torch and friends from this interpreter, after the venv's own site-packages (where the wheel goes)
    (site / "zz_borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the same answer on a machine with a GPU: stop before building
    probe = subprocess.run([str(python), "-c", PROBE], check=True, capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    package = pathlib.Path(found["package"])
    assert package == site / "convgru_ext", "the probe imported the checkout, not the installed wheel"
    assert found["version"] == convgru_ext.__version__ != "0+unknown"
    assert pathlib.Path(found["sources_dir"]) == package / "_csrc"
    shipped = [pathlib.Path(p).relative_to(package / "_csrc").as_posix() for p in found["sources"]]
    in_checkout = [pathlib.Path(p).relative_to(ROOT / "csrc").as_posix() for p in _build.sources()]
    assert shipped == in_checkout and all(pathlib.Path(p).is_file() for p in found["sources"])
    options = found["options"]
    assert (pathlib.Path(options["include_dirs"][0]) / "convgru.h").is_file()
    assert options["extra_compile_args"] == _build.build_options()["extra_compile_args"]
    assert "no CUDA device" in found["reason"] and "not in this installation" not in found["reason"]
    assert found["cpu_loop"] is None, found["cpu_loop"]
