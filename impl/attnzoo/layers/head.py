"""The classification head of the mobile CNNs (MobileNet V1/V2/V3, MnasNet, EfficientNet, GhostNet)."""
from __future__ import annotations

import torch
import torch.nn as nn


def pooled_logits(x: torch.Tensor, classifier: nn.Module, dropout: nn.Module, conv_head: nn.Module | None = None,
                  act: nn.Module | None = None) -> torch.Tensor:
    """(N, C, H, W) last map -> (N, num_classes): global average pooling, then, where the network has one after
    the pooling (MobileNetV3, GhostNet), ``act(conv_head(.))`` on the pooled (N, C, 1, 1) vector, dropout and the
    linear classifier. The modules stay attributes of the model under their timm / authors' names; only the order
    of application lives here."""
    x = x.mean(dim=(2, 3), keepdim=True)
    if conv_head is not None:
        x = act(conv_head(x))
    return classifier(dropout(x.flatten(1)))
