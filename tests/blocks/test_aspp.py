"""ASPP (DeepLab, chen2018deeplab; DeepLabv3, chen2017rethinking), registered as "aspp" and "aspp_v2"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block


def _cbr(x, unit, dilation=1):
    """conv -> BN (eval) -> ReLU from torch primitives, with the weights of a ConvNormAct."""
    conv, bn = unit[0], unit[1]
    pad = dilation * (conv.kernel_size[0] // 2)
    y = F.conv2d(x, conv.weight, None, padding=pad, dilation=dilation)
    return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


@torch.no_grad()
def test_aspp_equals_its_equations_built_from_primitives(randomise_bn):
    torch.manual_seed(0)
    block = create_block("aspp", 8, 6, rates=(1, 2, 3)).eval()
    randomise_bn(block)
    x = torch.randn(2, 8, 7, 10)
    ys = [_cbr(x, block.convs[0])] + [_cbr(x, block.convs[i + 1], r) for i, r in enumerate((1, 2, 3))]
    pooled = _cbr(x.mean(dim=(2, 3), keepdim=True), block.pool)
    ys.append(pooled.expand(-1, -1, 7, 10))
    torch.testing.assert_close(block(x), _cbr(torch.cat(ys, 1), block.project))


@torch.no_grad()
def test_aspp_matches_torchvision_deeplabv3_aspp_on_the_same_weights(randomise_bn):
    from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

    torch.manual_seed(0)
    ours = create_block("aspp", 16, 8).eval()
    theirs = TorchvisionASPP(16, (6, 12, 18), 8).eval()
    randomise_bn(theirs)
    src, dst = theirs.state_dict(), ours.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    ours.load_state_dict(dict(zip(dst.keys(), src.values())))
    x = torch.randn(2, 16, 13, 9)
    torch.testing.assert_close(ours(x), theirs(x))


def test_atrous_branch_sees_exactly_its_taps():
    """The gradient of one output of a rate-r branch reaches the 3x3 taps r pixels apart, nothing else."""
    block = create_block("aspp_v2", 1, 1, rates=(5,))
    x = torch.randn(1, 1, 21, 23, requires_grad=True)
    block(x)[0, 0, 10, 11].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert sorted(set(rows.tolist())) == [5, 10, 15] and sorted(set(cols.tolist())) == [6, 11, 16]
    assert len(rows) == 9


@torch.no_grad()
def test_aspp_v2_sums_the_class_scores_of_its_branches():
    torch.manual_seed(0)
    block = create_block("aspp_v2", 8, 5).eval()
    assert block.rates == (6, 12, 18, 24)
    x = torch.randn(1, 8, 9, 14)
    ref = sum(F.conv2d(x, b.weight, b.bias, padding=r, dilation=r) for b, r in zip(block.branches, block.rates))
    torch.testing.assert_close(block(x), ref)


def test_aspp_v2_vgg_branches_have_the_papers_fc6_fc7_fc8_widths():
    with torch.device("meta"):
        block = create_block("aspp_v2", 512, 21, hidden_channels=1024)
    per_branch = (512 * 9 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 21
    assert sum(p.numel() for p in block.parameters()) == 4 * per_branch


def test_image_pooling_branch_is_constant_over_space_and_needs_a_batch_of_two_in_training():
    block = create_block("aspp", 4, 4).eval()
    pooled = block.branches(torch.randn(1, 4, 5, 8))[-1]
    torch.testing.assert_close(pooled, pooled[..., :1, :1].expand_as(pooled))
    with pytest.raises(ValueError, match="batch of at least 2"):
        block.train()(torch.randn(1, 4, 5, 8))
    assert create_block("aspp", 4, 4, image_pooling=False).train()(torch.randn(1, 4, 5, 8)).shape == (1, 4, 5, 8)


def test_aspp_rejects_bad_rates():
    for rates in [(), (6, 0), (6, 1.5)]:
        with pytest.raises(ValueError, match="rate"):
            create_block("aspp", 8, 8, rates=rates)
