"""EffNet (freeman2018effnet): the block of the paper's Fig. 1a as the conv "effnet", and its CIFAR-10 network
(Table 1) as the model "effnet_cifar10". The registry-wide tests cover the generic contract."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.nbtools import measure


def _bn_relu(z, bn):
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return torch.relu((z - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None])


def _reference(block, x):
    """The block in eval mode, written from Fig. 1a with other operations: the separable pooling as a max over
    explicit pairs of rows (an odd height repeats its last row, which the max ignores), and the strided 2 x 1
    convolution as a stride-1 convolution of which every second column is kept (or, for "strided", an einsum over
    explicit pairs of columns)."""
    c1, c2, c3, last = block.conv_pw, block.conv_1xk, block.conv_kx1, block.conv_reduce
    z = _bn_relu(F.conv2d(x, c1[0].weight, groups=block.groups), c1[1])
    z = _bn_relu(F.conv2d(F.pad(z, (1, 1, 0, 0)), c2[0].weight, groups=block.mid_channels), c2[1])
    if z.shape[-2] % 2:
        z = torch.cat([z, z[..., -1:, :]], dim=-2)
    z = z.unflatten(-2, (z.shape[-2] // 2, 2)).amax(dim=-2)
    z = _bn_relu(F.conv2d(F.pad(z, (0, 0, 1, 1)), c3[0].weight, groups=block.mid_channels), c3[1])
    if block.reduce_kernel == "pooled":  # 2 x 1 window on rows (i, i + 1), zero row below the last
        full = F.conv2d(F.pad(z, (0, 0, 0, 1)), last.weight, last.bias, groups=block.groups)
        return full[..., ::2]
    z = F.pad(z, (0, z.shape[-1] % 2))  # 1 x 2 windows on column pairs (2j, 2j + 1)
    pairs = z.unflatten(-1, (z.shape[-1] // 2, 2))  # (N, C, H, W / 2, 2)
    w = last.weight  # (C_out, C / g, 1, 2)
    g, cg = block.groups, w.shape[1]
    pairs = pairs.unflatten(1, (g, cg))
    out = torch.einsum("ngchwk,gock->ngohw", pairs, w[:, :, 0].unflatten(0, (g, -1)))
    return out.flatten(1, 2) + (0 if last.bias is None else last.bias[:, None, None])


@pytest.mark.parametrize("reduce_kernel,groups,bias", [("pooled", 1, False), ("strided", 1, True),
                                                      ("pooled", 2, True)])
def test_block_equals_fig1a_written_out(reduce_kernel, groups, bias, randomise_bn):
    torch.manual_seed(0)
    block = randomise_bn(create_conv("effnet", 6, 8, 3, stride=2, groups=groups, bias=bias,
                                     reduce_kernel=reduce_kernel)).double().eval()
    for size in [(8, 10), (7, 9), (5, 2)]:
        x = torch.randn(2, 6, *size, dtype=torch.float64)
        y = block(x)
        assert y.shape == (2, 8, -(-size[0] // 2), -(-size[1] // 2))
        torch.testing.assert_close(y, _reference(block, x))


def test_pooling_then_stride_each_halve_one_axis_and_second_depthwise_runs_at_half_height():
    block = create_conv("effnet", 4, 8, 3, stride=2).eval()
    seen = {}
    for name in ("conv_1xk", "conv_kx1", "conv_reduce"):
        getattr(block, name).register_forward_hook(lambda m, i, o, name=name: seen.update({name: (i[0].shape,
                                                                                                  o.shape)}))
    block(torch.randn(1, 4, 12, 10))
    assert seen["conv_1xk"][1][-2:] == (12, 10)       # full resolution
    assert seen["conv_kx1"][0][-2:] == (6, 10)        # after the 2 x 1 max-pooling: half the height only
    assert seen["conv_reduce"][1][-2:] == (6, 5)      # the 1d stride halves the width
    assert block.mid_channels == 4 and block.conv_reduce.kernel_size == (2, 1)
    assert block.conv_1xk[0].kernel_size == (1, 3) and block.conv_kx1[0].kernel_size == (3, 1)


def test_stride_one_keeps_the_size_with_a_pointwise_last_convolution():
    block = create_conv("effnet", 4, 8, 5, stride=1).eval()
    assert isinstance(block.pool, torch.nn.Identity) and block.conv_reduce.kernel_size == (1, 1)
    assert block(torch.randn(1, 4, 7, 6)).shape == (1, 8, 7, 6)


def test_cifar10_model_has_table1_data_flow():
    """Floats out of every layer of Table 1's EffNet column at 32 x 32 (the whole model is 5.6 M MACs: on the CPU
    this is quicker than a first forward on the meta device)."""
    model = create_model("effnet_cifar10").eval()
    floats = []
    for conv in model.blocks:
        block = conv[0]
        for name in ("conv_pw", "pool", "conv_kx1"):
            getattr(block, name).register_forward_hook(lambda m, i, o: floats.append(o[0].numel()))
        conv.register_forward_hook(lambda m, i, o: floats.append(o[0].numel()))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert floats == [32768, 16384, 16384, 16384, 16384, 8192, 8192, 8192, 8192, 4096, 4096, 4096]
    assert model.head.in_features == 4096


def test_cifar10_model_cost_matches_table2():
    """Table 2: 11.4 million FLOPs; at two FLOPs per multiply-accumulate ours is within 2 %."""
    _, macs = measure(lambda: create_model("effnet_cifar10"), (1, 3, 32, 32))  # shared with the notebook's count
    assert 2 * macs / 1e6 == pytest.approx(11.4, rel=0.02)


def test_other_sizes_are_pooled_to_the_classifier_grid():
    torch.manual_seed(0)
    model = create_model("effnet_cifar10", widths=(4, 4, 8)).eval()
    for size, grid in [((32, 32), None), ((64, 64), 2), ((33, 47), None)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            feats = model.forward_features(x)
            if grid is not None:
                feats = feats.unflatten(2, (4, grid)).unflatten(-1, (4, grid)).mean(dim=(3, 5))
            elif size != (32, 32):
                feats = F.adaptive_avg_pool2d(feats, 4)
            torch.testing.assert_close(model(x), model.head(feats.flatten(1)))


@pytest.mark.parametrize("kwargs,match", [(dict(stride=3), "stride"), (dict(kernel_size=4), "odd kernel_size"),
                                          (dict(groups=4, out_channels=4), "multiple of groups"),
                                          (dict(reduce_kernel="both"), "reduce_kernel")])
def test_bad_arguments(kwargs, match):
    args = dict(in_channels=8, out_channels=8, kernel_size=3, stride=2)
    with pytest.raises(ValueError, match=match):
        create_conv("effnet", **{**args, **kwargs})


def test_model_rejects_wrong_inputs():
    model = create_model("effnet_cifar10", widths=(4, 4, 8)).eval()
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="widths"):
        create_model("effnet_cifar10", widths=())
