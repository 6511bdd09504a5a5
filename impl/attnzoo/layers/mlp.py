"""The two-layer feed-forward network of transformers."""
from __future__ import annotations

import torch
import torch.nn as nn

from .create_act import create_act


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout on the last dimension: (..., C_in) -> (..., C_out)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act: str = "gelu", drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = create_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
