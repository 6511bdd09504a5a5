"""Stochastic depth (Huang et al., 2016): drop whole residual branches per sample."""
import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Zero a residual branch for a random subset of samples while training, rescaling the rest."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        # the rescaling goes into the (N, 1, ..., 1) mask: one full-size multiply forward and backward, not two
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over ``num_blocks`` blocks.

    Plain Python (not ``torch.linspace``), so models can be built on the meta device.
    """
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def stage_drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """``drop_path_rates`` over all ``sum(depths)`` blocks of a multi-stage network, split into one list per stage."""
    rates = drop_path_rates(drop_path_rate, sum(depths))
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[start:start + depth] for start, depth in zip(starts, depths)]
