"""Conv2Former: the convolutional modulation against its equation, its k x k receptive field, the paper's variant
without the inner GELU, near-identity blocks at initialisation, stage shapes and sizes, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.conv2former import Conv2Former, Conv2FormerBlock, ConvModulation


def _pointwise(x, conv):
    return torch.einsum("nchw,oc->nohw", x, conv.weight[:, :, 0, 0]) + conv.bias[:, None, None]


def _layer_norm_channels(x, norm):
    mean = x.mean(1, keepdim=True)
    var = (x - mean).square().mean(1, keepdim=True)
    return (x - mean) / (var + norm.eps).sqrt() * norm.weight[:, None, None] + norm.bias[:, None, None]


def test_modulation_is_the_hadamard_product_of_large_kernel_weights_and_values():
    torch.manual_seed(0)
    m = ConvModulation(8, kernel_size=7).eval()
    x = torch.randn(2, 8, 9, 13)
    with torch.no_grad():
        z = _layer_norm_channels(x, m.norm)
        dw = m.a[2]
        a = F.conv2d(F.gelu(_pointwise(z, m.a[0])), dw.weight, dw.bias, padding=3, groups=8)
        expected = _pointwise(a * _pointwise(z, m.v), m.proj)
        torch.testing.assert_close(m(x), expected)
        torch.testing.assert_close(m.modulation_weights(x), a)
        paper = ConvModulation(8, kernel_size=7, act_in_modulation=False)     # A = DWConv(W_1 X), no GELU
        paper.load_state_dict(m.state_dict())
        a_paper = F.conv2d(_pointwise(z, m.a[0]), dw.weight, dw.bias, padding=3, groups=8)
        torch.testing.assert_close(paper.modulation_weights(x), a_paper)


def test_each_output_sees_exactly_its_k_by_k_neighbourhood():
    torch.manual_seed(0)
    m = ConvModulation(4, kernel_size=11, norm=False).eval()                 # per-pixel 1x1 maps aside, k x k
    x = torch.randn(1, 4, 15, 23)
    with torch.no_grad():
        y = m(x)
        for dx, changed in [(5, True), (6, False)]:
            x2 = x.clone()
            x2[0, :, 7, 11 + dx] += 1.0
            diff = (m(x2) - y)[0, :, 7, 11].abs().max()
            assert (diff > 0) == changed, dx


def test_blocks_start_close_to_identity_with_their_layer_scales():
    torch.manual_seed(0)
    block = Conv2FormerBlock(8, kernel_size=7).eval()
    x = torch.randn(2, 8, 9, 10)
    with torch.no_grad():
        assert (block(x) - x).abs().max() < 1e-4
        block.layer_scale_1.fill_(0.0)
        block.layer_scale_2.fill_(1.0)
        torch.testing.assert_close(block(x), x + block.mlp(x))


def test_stage_shapes_kernels_and_depths_of_the_variants():
    with torch.device("meta"):
        m = create_model("conv2former_n")
        x = m.stem(torch.zeros(1, 3, 224, 224))
        shapes = [tuple(x.shape)]
        for stage in m.stages[1:]:  # a stage keeps its downsampling's shape (the blocks are residual)
            x = stage[1](stage[0](x))
            shapes.append(tuple(x.shape))
        assert shapes == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
        assert m.stages[0][0].attn.a[2].kernel_size == (7, 7)
        t = create_model("conv2former_t")
        assert t.stages[3][-1].attn.a[2].kernel_size == (11, 11)
        assert [sum(isinstance(b, Conv2FormerBlock) for b in s) for s in t.stages] == [3, 3, 12, 3]


def test_smallest_input_and_bad_arguments():
    m = Conv2Former(dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), head_dim=16, num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 31, 40)).shape == (1, 5)
        with pytest.raises(ValueError, match="at least 31x31"):
            m(torch.randn(1, 3, 40, 30))
    with pytest.raises(ValueError, match="odd"):
        ConvModulation(8, kernel_size=6)
    with pytest.raises(ValueError, match="even"):
        Conv2Former(dims=(9, 16, 16, 16))
    with pytest.raises(ValueError, match="depths and dims need 4"):
        Conv2Former(depths=(1, 1, 1))
