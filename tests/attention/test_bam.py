import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.attention.bam import BAM


def test_bam_is_residual_and_only_amplifies():
    torch.manual_seed(0)
    bam = create_attention("bam", 32).eval()
    x = torch.randn(2, 32, 9, 7)
    ratio = bam(x) / x
    assert (ratio > 1).all() and (ratio < 2).all(), "F' = F (1 + M) with M = sigmoid(...) in (0, 1)"
    torch.testing.assert_close(bam(x), x * (1 + torch.sigmoid(bam.channel(x) + bam.spatial(x))))


def test_spatial_branch_sees_a_17_pixel_window():
    torch.manual_seed(0)
    bam = create_attention("bam", 32).eval()
    for p in bam.parameters():  # positive weights: no ReLU switched off, so the footprint is structural
        p.data.abs_().add_(0.1)
    x = torch.rand(1, 32, 41, 41, requires_grad=True)
    bam.spatial(x)[0, 0, 20, 20].backward()
    rows, cols = (x.grad[0].abs().sum(0) > 0).nonzero().unbind(1)
    assert rows.max() - rows.min() + 1 == 17 and cols.max() - cols.min() + 1 == 17  # 1 + 2 * 2 * 4


def test_bam_resnet50_has_three_bams_at_stage_ends():
    model = create_model("bam_resnet50")
    bams = [(name, m) for name, m in model.named_modules() if isinstance(m, BAM)]
    assert [name for name, _ in bams] == ["stages.0.3", "stages.1.4", "stages.2.6"]
    assert [m.channel.fc1.in_channels for _, m in bams] == [256, 512, 1024]


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("bam", 64, dilation=0)
