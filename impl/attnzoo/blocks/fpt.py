"""Feature Pyramid Transformer (Zhang, Zhang, Tang, Wang, Hua & Sun, ECCV 2020, arXiv:2007.09451).

FPT re-encodes every level of a feature pyramid with three kinds of non-local interaction and fuses them:

* **Self-transformer (ST)**, within the level: non-local attention whose similarity is a *mixture of softmaxes*
  (MoS). Queries come from the map, keys and values from its 3x3/2 average-pooled copy; the query/key channels are
  split into m groups, each gives a softmax attention map, and the maps are mixed with image-dependent weights
  pi = softmax(W mean_p q_p) (m weights per image):

      ST(x) = x + BN(W_o sum_i pi_i softmax(q_i k_i^T / sqrt(d_k)) v)

* **Grounding transformer (GT)**, a finer level x_f queried against a coarser one x_c (top-down): with 1x1
  embeddings theta (of x_f), phi and g (of x_c), all C/2 wide, the similarity is the plain dot product averaged over
  the coarse positions (the code's ``mode='dot'``), and the result is projected back with a zero-initialised BN:

      GT(x_f, x_c) = BN(W_z (theta(x_f)^T phi(x_c) / N_c) g(x_c))

* **Rendering transformer (RT)**, a coarser level x_c rendered with a finer one x_f (bottom-up): a channel gate from
  the pooled finer map weights a 3x3 convolution of the coarse map, and a strided 3x3 convolution of the finer map
  is added:

      RT(x_c, x_f) = ReLU(BN(conv3x3_s2(x_f)) + BN(conv3x3(x_c)) * ReLU(BN(W GAP(x_f))))

For each output level, FPT concatenates ST of the level, RT with every finer level, GT with every coarser level and
the level itself (5 maps for a 4-level pyramid) and mixes them with a 3x3 convolution to C_out channels. This file
follows the authors' ``FPT_a.py`` (with ``self_trans.py``, ``grounding_trans.py``, ``rendering_trans.py``;
ZHANGDONG-NJUST/FPT): ST with one head, m = 2 mixtures, d_k = d_v = C, attention dropout 0.1; GT in ``dot`` mode
with C/2 embeddings; RT without upsampling; the fusion convolution without norm (``with_norm='none'``); every
convolution initialised Kaiming-uniform (a = 1) with zero bias, GT's BN at zero.

This block is one output level (a "node", like BiFPN's): ``forward(levels)`` takes a list of (N, C, H_i, W_i) maps,
its own level first, then the others of the pyramid (any order; larger ones are the finer levels, smaller ones the
coarser); it returns (N, C_out, H_0, W_0). ``num_finer`` / ``num_coarser`` say how many of each it takes (defaults:
the P4 node of P2-P5, two finer and one coarser). The FPN's 1x1 lateral convolutions that bring the backbone stages to
C channels, and the four nodes wired together, are not part of the block.

Departures from the authors' code:

* the code's RT only fits levels two times apart (its stride-2 convolution of the finer map is added to the coarser
  map, which fails for P2 -> P4 and further, used in ``FPT_a.py``); a finer map that is still larger after the
  stride-2 convolution is average-pooled to the coarse size;
* ST reshapes its pooled keys to H W / 4 positions, which fails for odd sizes; we keep the pooled map's own size
  (ceil(H/2) ceil(W/2)), identical for even sizes;
* GT computes (theta^T phi) g as theta^T (phi g) (no N_f x N_c matrix; the same product, reassociated), and ST runs
  on ``scaled_dot_product_attention`` with the mixtures as heads;
* layers the code builds but never uses are left out (RT's ``conv_cat`` and ``conv_reduction``: its forward adds
  ``bn_reduction(str_conv3x3(x_low))``, our ``down``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int, check_train_batch
from ..registry import register_block


class SelfTransformer(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x + BN(W_o MoS-attention(q = W_qk x, k = W_qk pool(x), v = W_v pool(x)))."""

    def __init__(self, channels: int, num_mix: int = 2, attn_drop: float = 0.1):
        super().__init__()
        check_divisible("channels", channels, num_mix, "num_mix")
        self.num_mix, self.attn_drop = num_mix, attn_drop
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.qk = nn.Conv2d(channels, channels, 1)                # shared by queries and keys, as in the code
        self.v = nn.Conv2d(channels, channels, 1)
        bound = num_mix ** -0.5
        self.mix = nn.Parameter(torch.empty(num_mix, channels).uniform_(-bound, bound)) if num_mix > 1 else None
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m = self.num_mix
        q = self.qk(x).flatten(2)                                              # (N, C, L)
        pooled = self.pool(x)
        k, v = self.qk(pooled).flatten(2), self.v(pooled).flatten(2)           # (N, C, L2)
        qh = q.view(n, m, c // m, -1).transpose(-1, -2)                         # (N, m, L, C/m)
        kh = k.view(n, m, c // m, -1).transpose(-1, -2)                         # (N, m, L2, C/m)
        vh = v.transpose(-1, -2)[:, None].expand(n, m, -1, c)                   # every mixture shares v
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=self.attn_drop if self.training else 0.0,
                                             scale=1.0 / math.sqrt(c))          # code: temperature sqrt(d_k)
        if self.mix is not None:
            pi = torch.softmax(self.mix.to(q.dtype) @ q.mean(dim=2, keepdim=True), dim=1)   # (N, m, 1)
            out = (out * pi[..., None]).sum(dim=1)
        else:
            out = out[:, 0]
        return x + self.norm(self.proj(out.transpose(1, 2).reshape(n, c, h, w)))


class GroundingTransformer(nn.Module):
    """(N, C, Hf, Wf) fine, (N, C, Hc, Wc) coarse -> (N, C, Hf, Wf): BN(W_z theta(fine)^T (phi(coarse) g(coarse)^T)
    / N_c), the code's ``dot`` mode."""

    def __init__(self, channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = channels // 2 if inter_channels is None else inter_channels
        check_positive_int("inter_channels", inter)
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inter, 1) for _ in range(3))
        self.out = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        t = self.theta(fine).flatten(2)                                          # (N, d, Lf)
        p, g = self.phi(coarse).flatten(2), self.g(coarse).flatten(2)           # (N, d, Lc)
        kv = torch.einsum("bdl,bel->bde", p, g) / p.shape[-1]                    # (N, d, d), mean over coarse
        y = torch.einsum("bdl,bde->bel", t, kv).view(fine.shape[0], -1, *fine.shape[-2:])
        return self.out(y)


class RenderingTransformer(nn.Module):
    """(N, C, Hc, Wc) coarse, (N, C, Hf, Wf) fine -> (N, C, Hc, Wc): ReLU(BN(conv_s2(fine)) + BN(conv3x3(coarse))
    * ReLU(BN(W GAP(fine))))."""

    min_train_batch = 2  # BatchNorm on the pooled gate

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.mask = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.down = nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        down = self.down(fine)
        if down.shape[-2:] != coarse.shape[-2:]:    # levels more than two times apart (see the module docstring)
            down = F.adaptive_avg_pool2d(down, coarse.shape[-2:])
        return F.relu(down + self.mask(coarse) * self.gate(fine.mean(dim=(2, 3), keepdim=True)))


@register_block("fpt")
class FPTNode(nn.Module):
    """A list of pyramid maps [own level, others...] (N, C, H_i, W_i) -> (N, C_out, H_0, W_0):
    conv3x3([ST(x); RT(x, finer)...; GT(x, coarser)...; x]).

    Args:
        in_channels: C of every level. out_channels: C_out (code: C). num_finer / num_coarser: how many larger /
            smaller levels the node takes (default 2 and 1: P4 of P2-P5). num_mix: ST's mixtures (code: 2; the
            code's FPN variant ``FPT_s.py`` uses 4). attn_drop: ST's attention dropout (code: 0.1).
    """

    min_train_batch = 2  # RT's BatchNorm on a pooled vector

    def __init__(self, in_channels: int, out_channels: int, num_finer: int = 2, num_coarser: int = 1,
                 num_mix: int = 2, attn_drop: float = 0.1):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        if not (isinstance(num_finer, int) and isinstance(num_coarser, int)) or min(num_finer, num_coarser) < 0:
            raise ValueError(f"num_finer and num_coarser must be non-negative ints, got {num_finer!r}, "
                             f"{num_coarser!r}")
        self.in_channels, self.num_finer, self.num_coarser = in_channels, num_finer, num_coarser
        self.st = SelfTransformer(in_channels, num_mix, attn_drop)
        self.rt = nn.ModuleList(RenderingTransformer(in_channels) for _ in range(num_finer))
        self.gt = nn.ModuleList(GroundingTransformer(in_channels) for _ in range(num_coarser))
        self.fuse = nn.Conv2d((num_finer + num_coarser + 2) * in_channels, out_channels, 3, padding=1)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_uniform_(mod.weight, a=1)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x, *others = levels
        area = x.shape[-2] * x.shape[-1]
        finer = sorted((o for o in others if o.shape[-2] * o.shape[-1] > area), key=lambda o: o.shape[-2])
        coarser = sorted((o for o in others if o.shape[-2] * o.shape[-1] < area), key=lambda o: -o.shape[-2])
        if len(finer) != self.num_finer or len(coarser) != self.num_coarser or len(others) != len(finer) + len(
                coarser) or any(o.shape[:2] != x.shape[:2] for o in others):
            raise ValueError(f"FPT node expects its own level then {self.num_finer} larger and {self.num_coarser} "
                             f"smaller (N, {self.in_channels}, H, W) maps of the same batch, got shapes "
                             f"{[tuple(t.shape) for t in levels]}")
        if finer:
            check_train_batch(self, x)
        parts = [self.st(x)] + [rt(x, f) for rt, f in zip(self.rt, finer)]
        parts += [gt(x, c) for gt, c in zip(self.gt, coarser)] + [x]
        return self.fuse(torch.cat(parts, dim=1))

    def example_inputs(self, n: int, h: int, w: int, device=None) -> tuple[list[torch.Tensor]]:
        """Its own level (h x w), then finer levels (2x, 4x, ...) and coarser ones (ceil halvings)."""
        sizes = [(h, w)] + [(h * 2 ** (i + 1), w * 2 ** (i + 1)) for i in range(self.num_finer)]
        hc, wc = h, w
        for _ in range(self.num_coarser):
            hc, wc = -(-hc // 2), -(-wc // 2)
            sizes.append((hc, wc))
        return ([torch.randn(n, self.in_channels, *s, device=device) for s in sizes],)
