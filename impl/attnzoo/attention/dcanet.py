"""DCANet: Learning Connected Attentions for Convolutional Neural Networks (Ma, Guo, Tang, Qiao, Chen, Yang & Fu,
arXiv 2020, arXiv:2007.05099).

An attention block has an extraction step (pool the feature map into a context) and a transformation step (turn
the context into the attention). In a plain SE/CBAM/GC network every block does both on its own input only.
DCA ("deep connected attention") feeds the previous block's transformation output into the current block's
extraction: with c_l the context the block extracts from its own map and a_{l-1} what the previous attention block
produced,

    c'_l = fuse(c_l, P(a_{l-1})),   a_l = T_l(c'_l),

where P projects a_{l-1} to the current width when the width changes (first block of a stage) and ``fuse`` is a
cheap learned combination. All attention blocks of the network are thus chained and learned jointly. Each
attention gets its own connection, following the authors' code (ma-xu/DCANet, models/resnet/*_dca.py):

* ``dca_se`` (resnet_se_dca.py ``CSELayer``): c = GAP(x) (N, C); c' = ReLU(LN(w_1 c + w_2 P(a) + b)), the
  1x1 convolution over the stacked pair [c; P(a)] of the code (``conv``), P = ReLU(LN(Linear)) (``att_fc``);
  s = sigmoid(W_2 ReLU(W_1 c')), y = s * x; the state passed on is a = s * c (= GAP(y)).
* ``dca_cbam`` (resnet_cbam_dca.py): two chains, one per attention dimension. Channel: the avg- and max-pooled
  descriptors of x are each fused with those of the previous channel-gated map, ReLU(LN(w_1 d + w_2 d_prev))
  (no bias), where the previous map first goes through P = ReLU(BN(conv1x1)) if the width changes; the state is
  the channel-gated map x' = M_c x. Spatial: the [max; mean] maps of x' and of the previous block's output
  (average-pooled to the current size) are fused as ReLU(BN(p_1 d + p_2 d_prev)) with scalars p_1 = 1, p_2 = 0
  at start, then CBAM's 7x7 conv-BN-sigmoid; the state is the output y = M_s x'.
* ``dca_gc`` (resnet_gc_dca.py ``RContextBlock2d``): c' = c + lambda P(a) with a scalar lambda starting at 0
  and P a C_prev -> C/16 -> C bottleneck with LayerNorm (like GC's transform); a_l = T(c') is the term GC adds to
  x, and is also the state passed on.

Inside a ResNet (``dca_se_resnet50`` ...) the chain runs through all 16 bottlenecks, across stages
(``ResNet(attn_connect=True)``, one attention per block at the usual residual site). Outside one, the registered
attention modules compute the plain SE/CBAM/GC of the first block, which has no predecessor; ``forward_connected(
x, prev)`` returns ``(y, state)`` for chaining.

Figures (the repository's README, Table 1; its "Param(G)" and "FLOPs" headers are swapped): DCA-GC-ResNet50
28.63 M parameters and 4.13 GFLOPs, DCA-CBAM-ResNet50 30.90 M. Ours: 28.63 M and 30.88 M. Its DCA-SE-ResNet50
figure (28.65 M) does not match the released code (30.90 M, the same architecture as ours up to the departure
below), so it is not listed under ``reported:``.

Departures from the authors' code:

* the first attention block has no predecessor, so we build no connection layers for it; the code builds them
  in every block and never uses them in the first (17 k parameters less for SE and CBAM, 5 k for GC);
* the code's ResNet initialisation zeroes the scale of every BatchNorm whose name contains ``SpatialGate``, which
  includes the BN of the fused spatial descriptors: the fused map is then 0, the 7x7 convolution's output is 0,
  and with the (also zeroed) BN after it no gradient ever reaches the spatial branch of blocks 2-16, whose gate
  stays constant. We zero only the last BN, as CBAM does, and start the fusion BN at 1;
* the code pools the previous spatial output with a kernel of H_prev // H (fails when H_prev is odd); we use
  adaptive average pooling to the current size, identical whenever H_prev is a multiple of H.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention
from .cbam import CBAM
from .gc import GlobalContext
from .se import SqueezeExcite


class PairFuse(nn.Module):
    """(N, C), (N, C) -> (N, C): ReLU(LN(w_1 a + w_2 b + beta)), the code's 1x1 conv over the stacked pair.

    ``weight`` keeps the layout of that ``nn.Conv2d(2, 1, 1)`` (and its default initialisation).
    """

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.mix = nn.Conv2d(2, 1, 1, bias=bias)
        self.norm = nn.LayerNorm(channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = self.mix.weight.view(2).to(a.dtype)
        y = w[0] * a + w[1] * b
        if self.mix.bias is not None:
            y = y + self.mix.bias.to(a.dtype)
        return F.relu(self.norm(y))


class Connected:
    """What the three DCA attentions share, placed before the plain attention in their bases: the constructor
    (the plain attention's, then, with ``prev_channels`` given, the connection layers of ``build_connection``),
    the check of the previous state, and ``forward`` = the first block of a chain, ``forward_connected(x, None)``.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 prev_channels: int | None = None):
        super().__init__(channels, rd_ratio, rd_channels)
        self.connected = prev_channels is not None
        if self.connected:
            self.build_connection(channels, check_positive_int("prev_channels", prev_channels), rd_ratio,
                                  rd_channels)

    def build_connection(self, channels: int, prev_channels: int, rd_ratio: float, rd_channels: int | None):
        raise NotImplementedError

    def check_prev(self, prev) -> None:
        if prev is not None and not self.connected:
            raise ValueError(f"{type(self).__name__} was built without prev_channels (the first block of a chain) "
                             "and cannot take a previous attention state")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_connected(x, None)[0]


@register_attention("dca_se")
class DcaSqueezeExcite(Connected, SqueezeExcite):
    """(N, C, H, W) -> (N, C, H, W): SE whose squeezed vector is fused with the previous SE's output.

    Args:
        channels: C. rd_ratio / rd_channels: SE bottleneck (code: r = 16).
        prev_channels: width of the previous attention's state; None for the first block (no connection layers).
    """

    def build_connection(self, channels: int, prev_channels: int, rd_ratio, rd_channels):
        self.project = (nn.Identity() if prev_channels == channels else
                        nn.Sequential(nn.Linear(prev_channels, channels), nn.LayerNorm(channels), nn.ReLU()))
        self.fuse = PairFuse(channels)

    def forward_connected(self, x: torch.Tensor, prev: torch.Tensor | None):
        """x (N, C, H, W), prev (N, C_prev) or None -> (y (N, C, H, W), state (N, C))."""
        self.check_prev(prev)
        c = x.mean(dim=(2, 3))
        z = c if prev is None else self.fuse(c, self.project(prev))
        s = self.gate(self.fc2(self.act(self.fc1(z[:, :, None, None])))).flatten(1)
        return x * s[:, :, None, None], c * s


@register_attention("dca_cbam")
class DcaCBAM(Connected, CBAM):
    """(N, C, H, W) -> (N, C, H, W): CBAM whose channel and spatial descriptors are fused with the previous
    CBAM's channel-gated and output maps.

    Args:
        channels: C. rd_ratio / rd_channels: channel MLP bottleneck (code: 16).
        prev_channels: width of the previous CBAM's maps; None for the first block (no connection layers).
    """

    def build_connection(self, channels: int, prev_channels: int, rd_ratio, rd_channels):
        self.project = (nn.Identity() if prev_channels == channels else nn.Sequential(
            nn.Conv2d(prev_channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU()))
        self.channel_fuse = PairFuse(channels, bias=False)
        self.p = nn.Parameter(torch.tensor([1.0, 0.0]))   # the code's p1, p2
        self.spatial_fuse = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU())

    def channel_weights(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """M_c, shape (N, C, 1, 1), from [avg; max] descriptors (fused with the previous map's, if any)."""
        # max with indices, as ChannelGate: its backward scatters instead of building an equality mask
        avg, mx = x.mean(dim=(2, 3)), x.flatten(2).max(dim=2).values
        if prev is not None:
            p = self.project(prev)
            avg = self.channel_fuse(avg, p.mean(dim=(2, 3)))
            mx = self.channel_fuse(mx, p.flatten(2).max(dim=2).values)
        a, m = self.channel.mlp(torch.cat([avg, mx], dim=0)[:, :, None, None]).chunk(2, dim=0)
        return torch.sigmoid(a + m)

    def spatial_weights(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """M_s, shape (N, 1, H, W), from [max; mean] maps (fused with the previous output's, if any)."""
        d = self.spatial.pool(x)
        if prev is not None:
            if prev.shape[-2:] != x.shape[-2:]:
                prev = F.adaptive_avg_pool2d(prev, x.shape[-2:])
            p = self.p.to(x.dtype)
            d = self.spatial_fuse(p[0] * d + p[1] * self.spatial.pool(prev))
        return torch.sigmoid(self.spatial.norm(self.spatial.conv(d)))

    def forward_connected(self, x: torch.Tensor, prev: tuple[torch.Tensor, torch.Tensor] | None):
        """x (N, C, H, W), prev (channel map, output map) of the previous CBAM or None -> (y, (x', y))."""
        self.check_prev(prev)
        prev_c, prev_s = (None, None) if prev is None else prev
        xc = x * self.channel_weights(x, prev_c)
        y = xc * self.spatial_weights(xc, prev_s) if self.spatial is not None else xc
        return y, (xc, y)


@register_attention("dca_gc")
class DcaGlobalContext(Connected, GlobalContext):
    """(N, C, H, W) -> (N, C, H, W): x + T(c + lambda P(a_prev)), GC whose context receives the previous GC's term.

    Args:
        channels: C. rd_ratio / rd_channels: transform bottleneck (code: r = 16).
        prev_channels: width of the previous GC's term; None for the first block (no connection layers).
    """

    def build_connection(self, channels: int, prev_channels: int, rd_ratio, rd_channels):
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.project = (nn.Identity() if prev_channels == channels else nn.Sequential(
            nn.Linear(prev_channels, rd), nn.LayerNorm(rd), nn.ReLU(), nn.Linear(rd, channels)))
        self.weight = nn.Parameter(torch.zeros(1))

    def forward_connected(self, x: torch.Tensor, prev: torch.Tensor | None):
        """x (N, C, H, W), prev (N, C_prev) or None -> (y (N, C, H, W), state T(c') (N, C))."""
        self.check_prev(prev)
        c = self.context(x)
        if prev is not None:
            c = c + self.weight.to(c.dtype) * self.project(prev)
        t = self.transform(c).to(x.dtype)
        y = x + t[:, :, None, None] if self.fusion == "add" else x * torch.sigmoid(t)[:, :, None, None]
        return y, t


for _name in ("se", "cbam", "gc"):
    register_resnet(f"dca_{_name}_resnet50", 50, attn_layer=f"dca_{_name}", attn_connect=True)
