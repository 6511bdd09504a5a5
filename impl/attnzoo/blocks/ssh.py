"""SSH detection module with its context module (Najibi, Samangouei, Chellappa & Davis, "SSH: Single Stage
Headless Face Detector", ICCV 2017, arXiv:1708.03979).

SSH detects faces of different sizes from several layers of a headless VGG-16. Each layer gets a *detection
module*: a 3x3 convolution next to a *context module* that enlarges the receptive field cheaply with stacked 3x3
convolutions (two for a 5x5 field, three for 7x7) sharing their first layer, concatenated and passed through a ReLU;
1x1 convolutions on the result score and regress K anchors per position:

    a = W_3x3 * x                                          (N, C_out/2, H, W)
    d = ReLU(W_dimred * x)                                 (N, C_out/4, H, W)   shared first layer of the context
    b = W_5x5 * d,   c = W_7x7 * ReLU(W_7x7-1 * d)         (N, C_out/4, H, W) each
    y = ReLU([a, b, c])                                    (N, C_out, H, W)
    scores = W_cls y (2K channels),  deltas = W_reg y (4K channels)

Channel widths follow the released Caffe model (``SSH/models/test_ssh.prototxt``): M2 and M3 have C_out = 512
(3x3: 256, context: 128 + 128), M1 has C_out = 256; every convolution has a bias and no BatchNorm; K = 2 anchors
per position (scores via a softmax over two classes per anchor).

``forward`` returns y, the features the heads see, so the block composes like any other; ``num_anchors=K`` adds the
two heads and ``predict(x)`` returns (scores, deltas). ``norm=True`` puts a BatchNorm after every convolution (the
form RetinaFace popularised, not the paper's). Not included: M1's input fusion of conv4_3 and conv5_3 (an
FPN-like 1x1 reduction, upsampling and sum before its detection module).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_divisible, check_positive_int
from ..registry import register_block


@register_block("ssh")
class SSHDetectionModule(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): [3x3 conv, context 5x5, context 7x7] concatenated, ReLU.

    Args:
        in_channels: C_in. out_channels: C_out, divisible by 4 (paper: 512 for M2/M3, 256 for M1).
        num_anchors: K, adds the classification (2K) and regression (4K) heads used by ``predict`` (paper: 2).
        norm: BatchNorm after each convolution (RetinaFace's form; the paper has none).
    """

    def __init__(self, in_channels: int, out_channels: int = 512, num_anchors: int | None = None,
                 norm: bool = False):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_divisible("out_channels", out_channels, 4, "4 (3x3 branch C/2, two context branches C/4)")
        half, quarter = out_channels // 2, out_channels // 4

        def conv(cin, cout, act=None):
            return ConvNormAct(cin, cout, 3, act=act, norm=norm)

        self.conv3x3 = conv(in_channels, half)
        self.context_dimred = conv(in_channels, quarter, "relu")
        self.context5x5 = conv(quarter, quarter)
        self.context7x7 = nn.Sequential(conv(quarter, quarter, "relu"), conv(quarter, quarter))
        self.relu = nn.ReLU()
        if num_anchors is not None:
            check_positive_int("num_anchors", num_anchors)
            self.cls_score = nn.Conv2d(out_channels, 2 * num_anchors, 1)
            self.bbox_pred = nn.Conv2d(out_channels, 4 * num_anchors, 1)
        self.num_anchors = num_anchors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.context_dimred(x)
        return self.relu(torch.cat([self.conv3x3(x), self.context5x5(d), self.context7x7(d)], dim=1))

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (N, 2K, H, W), box deltas (N, 4K, H, W)); needs ``num_anchors``."""
        if self.num_anchors is None:
            raise ValueError("predict needs the heads: build the block with num_anchors=K (the paper uses 2)")
        y = self(x)
        return self.cls_score(y), self.bbox_pred(y)
