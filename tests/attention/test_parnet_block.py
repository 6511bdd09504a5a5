"""ParNet RepVGG-SSE block: re-parameterization, the SSE gate's closed form, deploy parameter counts."""
import torch

from attnzoo import create_attention, create_model
from attnzoo.nbtools import count_params


def _randomize_bn(model):
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)


def test_fuse_keeps_outputs_block_and_model():
    torch.manual_seed(0)
    blk = create_attention("parnet_block", 32).eval()
    _randomize_bn(blk)
    x = torch.randn(2, 32, 7, 9)
    with torch.no_grad():
        y = blk(x)
        blk.fuse()
        torch.testing.assert_close(blk(x), y, rtol=1e-4, atol=1e-5)
    net = create_model("parnet_s", num_classes=10).eval()
    _randomize_bn(net)
    img = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = net(img)
        torch.testing.assert_close(net.fuse()(img), y, rtol=1e-4, atol=1e-4)


def test_zero_sse_weights_halve_the_skip_branch():
    torch.manual_seed(0)
    sse = create_attention("parnet_block", 16).eval()
    plain = create_attention("parnet_block", 16, se=False).eval()
    _randomize_bn(sse)
    plain.load_state_dict({k: v for k, v in sse.state_dict().items() if not k.startswith("se.")})
    with torch.no_grad():
        sse.se.weight.zero_()  # sigmoid(0) = 1/2 for every channel
        x = torch.randn(2, 16, 5, 6)
        pre = sse.dense(x) + sse.conv1x1(x) + 0.5 * sse.identity(x)
        torch.testing.assert_close(sse(x), torch.nn.functional.silu(pre))
        assert not torch.allclose(sse(x), plain(x))


def test_deploy_form_drops_exactly_the_1x1_branches():
    train, deploy = create_model("parnet_m"), create_model("parnet_m_deploy")
    from attnzoo.attention.parnet import RepSSEBlock
    removed = sum(count_params(b.conv1x1) + count_params(b.dense[1]) - b.dense[0].out_channels
                  for b in train.modules() if isinstance(b, RepSSEBlock))
    assert count_params(train) - count_params(deploy) == removed


def test_fuse_is_exact_at_odd_sizes():
    # strided blocks at odd sizes: the fused 3x3 kernel sees zeros beyond the border, so must the 2x2 pooling
    from attnzoo.attention.parnet import RepSSEBlock
    torch.manual_seed(0)
    blk = RepSSEBlock(8, 16, stride=2).eval()
    _randomize_bn(blk)
    blk = blk.double()
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        y = blk(x)
        blk.fuse()
        torch.testing.assert_close(blk(x), y, rtol=1e-10, atol=1e-10)
    net = create_model("parnet_s", num_classes=10).eval()
    _randomize_bn(net)
    net = net.double()
    img = torch.randn(2, 3, 65, 71, dtype=torch.float64)
    with torch.no_grad():
        y = net(img)
        torch.testing.assert_close(net.fuse()(img), y, rtol=1e-9, atol=1e-9)


def test_strided_pooling_pads_odd_sides_with_zeros():
    from attnzoo.attention.parnet import RepSSEBlock
    pool = RepSSEBlock(4, 8, stride=2).pool
    x = torch.arange(1.0, 1 + 3 * 5).reshape(1, 1, 3, 5)
    # hand-computed: windows of 2x2 with stride 2, the missing fourth row and sixth column count as zeros
    expected = torch.tensor([[(1 + 2 + 6 + 7) / 4, (3 + 4 + 8 + 9) / 4, (5 + 10) / 4],
                             [(11 + 12) / 4, (13 + 14) / 4, 15 / 4]])
    torch.testing.assert_close(pool(x)[0, 0], expected)
    even = torch.randn(2, 4, 6, 8)  # even sizes: the authors' nn.AvgPool2d(2, 2)
    torch.testing.assert_close(pool(even), torch.nn.functional.avg_pool2d(even, 2))
