"""Activation layers by name, so that variants can be written as data."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "hard_swish": nn.Hardswish,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "identity": nn.Identity,
}


def create_act(act: str | type[nn.Module] | Callable[[], nn.Module] | None) -> nn.Module:
    """Instantiate an activation from a name (see ``_ACTS``), a module class/factory, or None (identity)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        try:
            return _ACTS[act]()
        except KeyError:
            raise ValueError(f"unknown activation {act!r}; choose from {sorted(_ACTS)}") from None
    return act()
