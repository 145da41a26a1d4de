"""Build and install convgru-ext.

Pure Python for now; the CUDA extension (csrc/) is added to this file by the
CUDA backend work.
"""

from setuptools import find_packages, setup

setup(
    name="convgru-ext",
    version="0.1.0",
    description="A fast, trustworthy convolutional GRU for PyTorch: reference, PyTorch, Triton and CUDA backends",
    packages=find_packages(include=["convgru_ext", "convgru_ext.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "rich"],
    extras_require={"bench": ["matplotlib", "pytest-benchmark"], "triton": ["triton"]},
)
