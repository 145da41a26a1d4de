"""convgru-ext: a fast, trustworthy convolutional GRU for PyTorch.

Public API::

    ConvGRUCell, ConvGRU, SepConvGRU          # nn.Modules
    GRURCN                                    # the (stacked) GRU-RCN over several CNN levels
    convgru_cell, convgru_sequence            # functional, one layer and direction
    patch_raft(model)                         # swap a RAFT-family model's GRUs for ours, in place
    available_backends()                      # which backends run here, and why not

See README.md for the equations and the backends.
"""

from importlib import metadata as _metadata

from .backends import available_backends
from .functional import convgru_cell, convgru_sequence
from .grurcn import GRURCN
from .modules import ConvGRU, ConvGRUCell, SepConvGRU
from .raft import patch_raft

try:
    __version__ = _metadata.version("convgru-ext")  # setup.py's, as installed
except _metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvGRU",
    "ConvGRUCell",
    "GRURCN",
    "SepConvGRU",
    "available_backends",
    "convgru_cell",
    "convgru_sequence",
    "patch_raft",
    "__version__",
]
