"""convgru-ext: a fast, trustworthy convolutional GRU for PyTorch.

Public API::

    ConvGRUCell, ConvGRU, SepConvGRU          # nn.Modules
    convgru_cell, convgru_sequence            # functional, one layer and direction
    available_backends()                      # which backends run here, and why not

See README.md for the equations and the backends.
"""

from .backends import available_backends
from .functional import convgru_cell, convgru_sequence
from .modules import ConvGRU, ConvGRUCell, SepConvGRU

__version__ = "0.1.0"

__all__ = [
    "ConvGRU",
    "ConvGRUCell",
    "SepConvGRU",
    "available_backends",
    "convgru_cell",
    "convgru_sequence",
    "__version__",
]
