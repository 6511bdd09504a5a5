"""Attention modules, one file per paper; each registers itself with attnzoo.registry."""
from .._discover import import_submodules

import_submodules(__name__, __path__)
