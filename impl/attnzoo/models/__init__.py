"""Backbones, one file per paper; variants are registered as data in each file."""
from .._discover import import_submodules

import_submodules(__name__, __path__)
