"""EMO: Efficient MOdel built from inverted residual mobile blocks (Zhang et al., ICCV 2023, arXiv:2301.01146).

The paper abstracts MobileNetV2's inverted residual block and the transformer's attention and feed-forward layers
into one **Meta Mobile Block**: x -> expand (C -> lambda C) -> an efficient operator F -> shrink (lambda C -> C),
with one residual. Its instance, the **inverted residual mobile block** (iRMB), uses as
F a cascade of window self-attention and a depthwise convolution:

    y = x + Proj(DW-Conv-Skip(EW-MHSA(Norm(x)))),
    EW-MHSA(x) = act(W_v Concat_m softmax(Q_m K_m^T / sqrt(d)) X_m)   (attention on the C-wide input, expansion after),
    DW-Conv-Skip(z) = z + SiLU(BN(DWConv_k(z))),

with Q, K = W_qk x (1 x 1 convolution with bias, heads of ``dim_head`` channels), X_m the m-th head's channels of x
itself, and W_v the expansion (1 x 1 convolution C -> lambda C with bias and the stage's activation); Proj is a
bias-free 1 x 1 convolution back to C_out. The attention cost does not grow with the expansion ratio. Blocks
without attention (stages 1-2) use F = DW-Conv-Skip after W_v alone; the first block of each stage (stride 2,
expansion 2 lambda) has no attention and no residual, inner or outer.

Everything follows the authors' code (zhangzjn/EMO, model/emo.py, ``iRMB`` and ``EMO``; model/basic_modules.py):

* ``attn_pre=True`` (all released models): the attention mixes x and the expansion W_v (with its activation)
  follows it, as in the equation above; ``attn_pre=False`` (the code's other order: v = W_v x first, then
  attention on the expanded values) is kept as an option;
* **windows are strided, not contiguous**: the (zero-padded) map of H_p x W_p is cut as rows h = h1 n1 + i,
  h1 < M, n1 = H_p / M, so window (i, j) holds the M x M tokens {(h1 n1 + i, w1 n2 + j)}: a dilated grid spread
  over the whole map (dilation n1, n2), as the code's ``rearrange('b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1')``
  does. At 224 the 14 x 14 stage-3 maps get dilation 2, the 7 x 7 stage-4 maps are one (global) window;
* the normalized map is zero-padded right and bottom to multiples of M before Q and K are computed (padded
  tokens are keys with the convolution's bias, as there) and the output is cropped;
* the stem is a 3 x 3 stride-2 convolution (with bias) and BN, then one iRMB without input norm, without
  residual, with F = DW-Conv 3 x 3 -> BN -> SiLU -> squeeze-excitation (SiLU, reduction ratio 1); every norm has
  eps = 1e-6; stages 1-2 use BatchNorm and SiLU, stages 3-4 LayerNorm (over channels) and GELU in W_v (the
  depthwise convolution always has BN and SiLU); depthwise kernels 3, 3, 5, 5; window M = 7; the head is a
  LayerNorm, global average pooling and a linear layer (initialized truncated-normal, std 0.02; everything else
  keeps PyTorch's defaults, norms ones and zeros).

Variants (``EMO_1M`` ... ``EMO_6M`` in model/emo.py): depths, widths, expansion ratios and
head widths per stage. The code's padding ``ceil((k - s) / 2)`` equals k // 2 for the kernels used, so outputs
have ceil(H / 2) rows at every stride-2 layer and any input size works.

Registered: the block ``emo_irmb`` (``create_block("emo_irmb", C_in, C_out)``: an iRMB with attention, EMO's
stage-3 settings of EMO-5M by default: expansion 4, 5 x 5 depthwise kernel, heads of 32 channels, LayerNorm and
GELU; stride 1 and C_in = C_out give the residual) and the models ``emo_1m``, ``emo_2m``, ``emo_5m``, ``emo_6m``.
Attention runs in ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention.se import SqueezeExcite
from ..layers import (ConvNormAct, DropPath, LayerNorm2d, check_choice, check_images, check_positive_int,
                      check_stages, drop_path_rates, trunc_normal_init)
from ..registry import register_block, register_model

EPS = 1e-6  # every norm of the authors' get_norm
NORMS = ("bn", "ln")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=EPS) if kind == "bn" else LayerNorm2d(channels, eps=EPS)


@register_block("emo_irmb")
class InvertedResidualMobileBlock(nn.Module):
    """iRMB: (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)).

    Args:
        in_channels, out_channels: C_in, C_out. exp_ratio: lambda, the expansion C_mid = int(C_in lambda).
        dw_kernel: k of the depthwise convolution. stride: s of the depthwise convolution
            (after the attention, when both).
        attn: use the window self-attention (EW-MHSA). dim_head: channels per head (C_in must be a multiple).
        window_size: M (<= 0: one window, the whole map). norm: "bn" or "ln" (over channels) on the input;
        norm_in=False leaves it out. act: activation after W_v. has_skip: the residuals (only with s = 1 and
        C_in = C_out). v_proj: W_v (False: identity, needs lambda = 1, only without attention).
        se_ratio: > 0 adds squeeze-excitation (reduction ratio se_ratio, activation ``act``) after the depthwise
        convolution. attn_pre: attention before W_v (True, all released models) or on the expanded values.
        qkv_bias: biases in W_qk and W_v. attn_drop, drop, drop_path: dropout on the attention weights, before Proj,
        and stochastic depth on the residual branch.
    """

    def __init__(self, in_channels: int, out_channels: int, exp_ratio: float = 4.0, dw_kernel: int = 5,
                 stride: int = 1, attn: bool = True, dim_head: int = 32, window_size: int = 7, norm: str = "ln",
                 norm_in: bool = True, act: str = "gelu", has_skip: bool = True, v_proj: bool = True,
                 se_ratio: float = 0.0, attn_pre: bool = True, qkv_bias: bool = True, attn_drop: float = 0.0,
                 drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        for name, value in dict(in_channels=in_channels, out_channels=out_channels, dw_kernel=dw_kernel,
                                stride=stride).items():
            check_positive_int(name, value)
        check_choice("norm", norm, NORMS)
        if not exp_ratio > 0:
            raise ValueError(f"exp_ratio must be positive, got {exp_ratio!r}")
        mid = int(in_channels * exp_ratio)
        if attn:
            check_positive_int("dim_head", dim_head)
            if in_channels % dim_head:
                raise ValueError(f"in_channels={in_channels} must be a multiple of dim_head={dim_head} (the heads)")
            if not attn_pre and mid % (in_channels // dim_head):
                raise ValueError(f"attn_pre=False splits C_mid={mid} into {in_channels // dim_head} heads")
        if not v_proj and (attn or mid != in_channels):
            raise ValueError("v_proj=False needs exp_ratio=1 and no attention (W_v is the identity)")
        self.has_skip = has_skip and stride == 1 and in_channels == out_channels
        self.attn = bool(attn)
        self.num_heads = in_channels // dim_head if attn else 0
        self.window_size = window_size
        self.attn_pre = attn_pre
        self.attn_drop = attn_drop
        self.norm = _norm(norm, in_channels) if norm_in else nn.Identity()
        self.qk = nn.Conv2d(in_channels, 2 * in_channels, 1, bias=qkv_bias) if attn else None
        self.v = ConvNormAct(in_channels, mid, 1, act=act, norm=False, bias=qkv_bias) if v_proj else nn.Identity()
        self.conv_local = ConvNormAct(mid, mid, dw_kernel, stride, groups=mid, act="silu")
        self.conv_local[1].eps = EPS
        self.se = SqueezeExcite(mid, rd_ratio=se_ratio, act=act) if se_ratio > 0 else nn.Identity()
        self.proj_drop = nn.Dropout(drop)
        self.proj = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.drop_path = DropPath(drop_path)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """EW-MHSA on strided M x M windows: (N, C_in, H, W) normalized map -> (N, C_mid, H, W)."""
        n, c, h, w = x.shape
        wh, ww = (self.window_size, self.window_size) if self.window_size > 0 else (h, w)
        x = F.pad(x, (0, (-w) % ww, 0, (-h) % wh))
        hp, wp = x.shape[-2:]
        n1, n2 = hp // wh, wp // ww

        def windows(t):  # (N, C', hp, wp) -> (N n1 n2, heads, M*M, C' / heads); row h = h1 n1 + i
            ch = t.shape[1]
            t = t.reshape(n, self.num_heads, ch // self.num_heads, wh, n1, ww, n2).permute(0, 4, 6, 1, 3, 5, 2)
            return t.reshape(n * n1 * n2, self.num_heads, wh * ww, ch // self.num_heads)

        q, k = self.qk(x).chunk(2, dim=1)
        value = x if self.attn_pre else self.v(x)
        out = F.scaled_dot_product_attention(windows(q), windows(k), windows(value),
                                             dropout_p=self.attn_drop if self.training else 0.0)
        ch = value.shape[1]
        out = out.reshape(n, n1, n2, self.num_heads, wh, ww, ch // self.num_heads).permute(0, 3, 6, 4, 1, 5, 2)
        out = out.reshape(n, ch, hp, wp)
        if self.attn_pre:
            out = self.v(out)
        return out[:, :, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        x = self.window_attention(x) if self.attn else self.v(x)
        local = self.se(self.conv_local(x))
        x = self.proj(self.proj_drop(x + local if self.has_skip else local))
        return shortcut + self.drop_path(x) if self.has_skip else x


class EMO(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits, any H, W >= 1 (every stride-2 layer gives ceil(H / 2)).

    Args:
        depths, embed_dims: blocks and widths of the four stages. stem_dim: width of the stem.
        exp_ratios: lambda per stage (the first block of a stage expands 2 lambda). dim_heads: head width per stage.
        dw_kernels: depthwise kernels per stage. norms, acts: "bn"/"ln" and the W_v activation per stage.
        attn_stages: stages whose blocks (after the first) use attention. window_size: M.
        drop_rate: dropout before each Proj. drop_path_rate: stochastic depth rising
        linearly over the stages' blocks (the authors' values per model).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, depths: tuple[int, ...] = (2, 2, 8, 3),
                 stem_dim: int = 24, embed_dims: tuple[int, ...] = (32, 48, 80, 168),
                 exp_ratios: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5), dim_heads: tuple[int, ...] = (16, 16, 20, 21),
                 dw_kernels: tuple[int, ...] = (3, 3, 5, 5), norms: tuple[str, ...] = ("bn", "bn", "ln", "ln"),
                 acts: tuple[str, ...] = ("silu", "silu", "gelu", "gelu"),
                 attn_stages: tuple[bool, ...] = (False, False, True, True), window_size: int = 7,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.04036):
        super().__init__()
        depths, embed_dims = check_stages(depths, embed_dims)
        per_stage = dict(exp_ratios=exp_ratios, dim_heads=dim_heads, dw_kernels=dw_kernels, norms=norms, acts=acts,
                         attn_stages=attn_stages)
        for name, value in per_stage.items():
            if len(tuple(value)) != 4:
                raise ValueError(f"{name} needs 4 entries (one per stage), got {value!r}")
        for name, value in dict(num_classes=num_classes, in_chans=in_chans, stem_dim=stem_dim).items():
            check_positive_int(name, value)
        stem_conv = nn.Conv2d(in_chans, stem_dim, 3, 2, 1)
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(stem_dim, eps=EPS),
                                  InvertedResidualMobileBlock(stem_dim, stem_dim, 1.0, dw_kernels[0], attn=False,
                                                              norm=norms[0], norm_in=False, act=acts[0],
                                                              has_skip=False, v_proj=False, se_ratio=1.0))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, prev, start = [], stem_dim, 0
        for i in range(4):
            blocks = []
            for j in range(depths[i]):
                first = j == 0
                blocks.append(InvertedResidualMobileBlock(
                    prev, embed_dims[i], exp_ratios[i] * (2 if first else 1), dw_kernels[i], 2 if first else 1,
                    attn=bool(attn_stages[i]) and not first, dim_head=dim_heads[i], window_size=window_size,
                    norm=norms[i], act=acts[i], has_skip=not first, drop=drop_rate, drop_path=rates[start + j]))
                prev = embed_dims[i]
            stages.append(nn.Sequential(*blocks))
            start += depths[i]
        self.stages = nn.Sequential(*stages)
        self.norm = _norm(norms[-1], embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        trunc_normal_init(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C_4, H / 32, W / 32) normalized map (ceil at every stride)."""
        check_images("EMO", x)
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


_VARIANTS = {  # model/emo.py: EMO_1M, EMO_2M, EMO_5M, EMO_6M
    "emo_1m": dict(depths=(2, 2, 8, 3), embed_dims=(32, 48, 80, 168), exp_ratios=(2.0, 2.5, 3.0, 3.5),
                   dim_heads=(16, 16, 20, 21), drop_path_rate=0.04036),
    "emo_2m": dict(depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200), exp_ratios=(2.0, 2.5, 3.0, 3.5),
                   dim_heads=(16, 16, 20, 20), drop_path_rate=0.05),
    "emo_5m": dict(depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 288), exp_ratios=(2.0, 3.0, 4.0, 4.0),
                   dim_heads=(24, 24, 32, 32), drop_path_rate=0.05),
    "emo_6m": dict(depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 320), exp_ratios=(2.0, 3.0, 4.0, 5.0),
                   dim_heads=(16, 24, 20, 32), drop_path_rate=0.05),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, EMO, **_cfg)
