"""MobileViG: SVGA's loop-free max-relative aggregation against the authors' loop over hops, its graph in closed
form, the stage shapes and the two heads."""
import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.models.mobilevig import max_relative


def _loop_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """The authors' MRConv4d aggregation: start from x - x = 0, then for every hop i = K, 2K, ... < H (W) take the
    elementwise max with x minus the map rolled by i rows (columns)."""
    _, _, h, w = x.shape
    x_j = x - x
    for i in range(k, h, k):
        x_j = torch.max(x_j, x - torch.cat([x[:, :, -i:, :], x[:, :, :-i, :]], dim=2))
    for i in range(k, w, k):
        x_j = torch.max(x_j, x - torch.cat([x[:, :, :, -i:], x[:, :, :, :-i]], dim=3))
    return x_j


@pytest.mark.parametrize("h,w,k", [(8, 6, 2), (7, 7, 2), (5, 11, 2), (9, 4, 3), (1, 3, 2), (2, 2, 4)])
def test_max_relative_equals_the_loop_over_hops(h, w, k):
    torch.manual_seed(0)
    x = torch.randn(2, 3, h, w, requires_grad=True)
    ours, ref = max_relative(x, k), _loop_reference(x, k)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad((ours * g).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * g).sum(), x)
    torch.testing.assert_close(g_ours, g_ref)


def test_graph_connects_every_kth_pixel_of_row_and_column():
    """With K | H and K | W, pixel p = (h, w) is connected to q iff they share a column and h = q_h (mod K), or a
    row and w = q_w (mod K): a very low value at q shows up in exactly those pixels' aggregation."""
    h, w, k = 8, 6, 2
    for qh, qw in [(3, 2), (0, 5)]:
        x = torch.zeros(1, 1, h, w)
        x[0, 0, qh, qw] = -10.0
        reached = max_relative(x, k)[0, 0] > 0
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        expect = ((cols == qw) & ((rows - qh) % k == 0)) | ((rows == qh) & ((cols - qw) % k == 0))
        expect[qh, qw] = False                                  # its own difference is 0
        assert torch.equal(reached, expect)


def test_svga_is_a_residual_grapher_at_any_size():
    torch.manual_seed(0)
    m = create_attention("svga", 16).eval()
    for size in [(1, 16, 7, 7), (2, 16, 5, 11)]:
        x = torch.randn(size)
        with torch.no_grad():
            branch = m.fc2(m.graph_conv(m.fc1(x)))
            torch.testing.assert_close(m(x), x + branch)
    assert m.graph_conv.nn[0].in_channels == 32 and m.graph_conv.nn[0].out_channels == 32   # [x; x_j] -> 2C


def test_stage_shapes_and_heads():
    with torch.device("meta"):
        model = create_model("mobilevig_ti", num_classes=10)
        x = torch.zeros(1, 3, 224, 224)
        shapes = [tuple(t.shape) for t in _stage_outputs(model, x)]
    assert shapes == [(1, 42, 56, 56), (1, 84, 28, 28), (1, 168, 14, 14), (1, 256, 7, 7)]
    assert [len(s) for s in model.stages] == [2, 3, 7, 3]       # blocks, plus a stride-2 convolution from stage 2
    torch.manual_seed(0)
    small = create_model("mobilevig_ti", num_classes=5, layers=(1, 1, 1, 1), embed_dims=(8, 8, 16, 16),
                         hidden_dim=16, distilled_training=True)
    img = torch.randn(2, 3, 35, 48)
    cls, dist = small.train()(img)
    assert cls.shape == dist.shape == (2, 5)
    small.eval()
    with torch.no_grad():
        z = small.prediction(small.forward_features(img).mean(dim=(2, 3), keepdim=True))
        mean = (small.head(z) + small.dist_head(z)).flatten(1) / 2
        torch.testing.assert_close(small(img), mean)


def _stage_outputs(model, x):
    out, x = [], model.stem(x)
    for stage in model.stages:
        x = stage(x)
        out.append(x)
    return out
