"""LayerScale (Touvron et al., "Going deeper with image transformers", ICCV 2021): a learned per-channel diagonal
on a residual branch, x + diag(gamma) f(x), started small so that deep stacks begin near the identity."""
from __future__ import annotations

import torch
import torch.nn as nn


def layer_scale(dim: int, init_value: float) -> nn.Parameter:
    """The (dim,) vector gamma, every entry ``init_value``.

    A bare parameter, not a module: each model keeps it under its authors' and timm's attribute name (CaiT's
    ``gamma_1``/``gamma_2``, XCiT's ``gamma1``-``gamma3``, PoolFormer's ``layer_scale1``/``layer_scale2``,
    ConvNeXt's and EfficientFormer's ``gamma``), so their state dicts load without renaming."""
    return nn.Parameter(torch.full((dim,), float(init_value)))
