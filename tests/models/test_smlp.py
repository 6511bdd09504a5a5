"""sMLPNet: the sparse MLP as a token-mixing matrix with only row and column connections (against a dense
Kronecker-product reference), the resampling of its mixing matrices at other sizes and the authors' refusal,
the block's two residual branches, stage shapes at odd sizes, the authors' variants and bad arguments."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.registry import model_entry


def _dense_reference(m, x):
    """(N, C, H, W): the sparse MLP written as MLP-Mixer's dense token mixing over the H * W tokens, with the
    matrices kron(I_H, W_W) (rows) and kron(W_H, I_W) (columns)."""
    n, c, h, w = x.shape
    a = F.gelu(F.batch_norm(x, m.norm.running_mean, m.norm.running_var, m.norm.weight, m.norm.bias, False))
    t = a.flatten(2)                                                         # (N, C, H*W)
    rows = torch.kron(torch.eye(h, dtype=x.dtype), m.proj_w.weight)
    cols = torch.kron(m.proj_h.weight, torch.eye(w, dtype=x.dtype))
    x_w = t @ rows.T + m.proj_w.bias.repeat(h)
    x_h = t @ cols.T + m.proj_h.bias.repeat_interleave(w)
    both = torch.cat([t, x_w, x_h], 1).reshape(n, 3 * c, h, w)
    return torch.einsum("oi,nihw->nohw", m.fuse.weight.flatten(1), both)


def test_sparse_mlp_is_dense_token_mixing_restricted_to_rows_and_columns(randomise_bn):
    torch.manual_seed(0)
    m = randomise_bn(create_attention("sparse_mlp", 6, grid=(5, 7))).double().eval()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), _dense_reference(m, x))


def test_a_token_reads_only_its_row_and_column():
    m = create_attention("sparse_mlp", 4, grid=(5, 6)).double().eval()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 1, 4].sum().backward()
    cross = torch.zeros(5, 6, dtype=torch.bool)
    cross[1, :] = cross[:, 4] = True
    assert torch.equal(x.grad[0].abs().sum(0) > 0, cross)


def test_other_sizes_resample_the_mixing_matrices_keeping_an_average_an_average():
    m = create_attention("sparse_mlp", 4, grid=8).double().eval()
    with torch.no_grad():
        m.proj_w.weight.fill_(1 / 8)          # the mean along each row
        m.proj_w.bias.zero_()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _dense_reference(m, x))       # native size: the weights as they are
    weight, bias = m._mixing(m.proj_w, 13)
    torch.testing.assert_close(weight, torch.full((13, 13), 1 / 13, dtype=torch.float64))
    w, b = m.proj_h.weight, m.proj_h.bias                              # bilinear as an image, scaled by 8 / 5
    expected = F.interpolate(w[None, None], size=(5, 5), mode="bilinear", align_corners=False)[0, 0] * 8 / 5
    torch.testing.assert_close(m._mixing(m.proj_h, 5)[0], expected)
    torch.testing.assert_close(m._mixing(m.proj_h, 5)[1], F.interpolate(b[None, None], size=5, mode="linear")[0, 0])
    assert m(torch.randn(1, 4, 11, 13, dtype=torch.float64)).shape == (1, 4, 11, 13)


def test_grid_mismatch_error_is_the_authors_single_size():
    m = create_attention("sparse_mlp", 4, grid=8, grid_mismatch="error")
    assert m(torch.randn(1, 4, 8, 8)).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="built for 8x8 maps"):
        m(torch.randn(1, 4, 8, 9))
    model = create_model("smlpnet_t", depths=(1, 1, 1, 1), embed_dim=8, img_size=64, grid_mismatch="error")
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="built for 16x16 maps"):
        model(torch.randn(1, 3, 96, 64))


def test_block_is_dwconv_then_sparse_mlp_then_channel_mlp_each_with_a_residual(randomise_bn):
    model = randomise_bn(create_model("smlpnet_t", depths=(1, 1, 1, 1), embed_dim=8, img_size=64)).double().eval()
    block = model.stages[1].blocks[0]
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    d = block.dwconv
    a = F.gelu(F.batch_norm(x, d.norm.running_mean, d.norm.running_var, d.norm.weight, d.norm.bias, False))
    u = x + _dense_reference(block.smlp, F.conv2d(a, d.conv.weight, padding=1, groups=16))
    y = F.layer_norm(u.permute(0, 2, 3, 1), (16,), block.norm.weight, block.norm.bias)
    mlp = block.mlp
    expected = u + (F.gelu(y @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(block(x), expected)
    assert (mlp.fc1.out_features, block.smlp.proj_w.in_features) == (48, 8)   # alpha = 3; 64 / 8 at stage 2


def test_stage_shapes_at_an_odd_size_the_smallest_input_and_a_non_square_build():
    model = create_model("smlpnet_t", depths=(1, 1, 1, 1), embed_dim=8, num_classes=4).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        t, shapes = x, []
        for stage in model.stages:
            t = stage(t)
            shapes.append(tuple(t.shape[1:]))
        assert shapes == [(8, 16, 11), (16, 8, 5), (32, 4, 2), (64, 2, 1)]
        torch.testing.assert_close(model(x), model.head(model.norm(t).mean((2, 3))))
        assert model(torch.randn(1, 3, 32, 33)).shape == (1, 4)
    with pytest.raises(ValueError, match="at least 32x32 pixels"):
        model(torch.randn(1, 3, 31, 64))
    wide = create_model("smlpnet_t", depths=(1, 1, 1, 1), embed_dim=8, img_size=(64, 96))
    assert (wide.stages[0].blocks[0].smlp.proj_h.in_features, wide.stages[0].blocks[0].smlp.proj_w.in_features) \
        == (16, 24)


@pytest.mark.parametrize("name,dim,depths,dpr", [("smlpnet_t", 80, (2, 8, 14, 2), 0.0),
                                                 ("smlpnet_s", 96, (2, 10, 24, 2), 0.2),
                                                 ("smlpnet_b", 112, (2, 10, 24, 2), 0.3)])
def test_variants_are_the_authors(name, dim, depths, dpr):
    assert model_entry(name).defaults == dict(embed_dim=dim, depths=depths, drop_path_rate=dpr)


def test_shared_layout_of_the_authors_code():
    with torch.device("meta"):
        model = create_model("smlpnet_t")
    stem, down = model.stages[0].downsample, model.stages[1].downsample
    assert (stem.kernel_size, stem.stride, stem.bias, down.kernel_size, down.stride) == ((4, 4), (4, 4), None,
                                                                                         (2, 2), (2, 2))
    assert [s.blocks[0].smlp.proj_w.in_features for s in model.stages] == [56, 28, 14, 7]
    assert [s.blocks[0].smlp.fuse.in_channels for s in model.stages] == [240, 480, 960, 1920]
    assert model.stages[0].blocks[0].dwconv.conv.groups == 80


@pytest.mark.parametrize("kwargs", [dict(depths=(1, 1, 1)), dict(embed_dim=0), dict(img_size=200),
                                    dict(mlp_ratio=0), dict(grid_mismatch="crop"), dict(drop_path_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("smlpnet_t", **kwargs)


def test_sparse_mlp_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("sparse_mlp", 8, grid=0)
    with pytest.raises(ValueError):
        create_attention("sparse_mlp", 8, grid_mismatch="pad")
