"""Weight initialization shared by the transformer-style models."""
import torch.nn as nn


def trunc_normal_init(m: nn.Module, std: float = 0.02, types: tuple = (nn.Linear,)) -> None:
    """ViT-style init for ``model.apply``: truncated normal weights (std 0.02) and zero biases for ``types``."""
    if isinstance(m, types):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
