"""DynaMixer: the generated mixing against an explicit per-segment reference, the size policy, the cross-shaped
reach of the height and width mixing, and the authors' stage grids."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.dynamixer import DynaMixerOp


def _reference_op(op: DynaMixerOp, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations, one row and one segment at a time: Z = X W_r; P_g = softmax over the inputs of
    reshape(W vec(Z_g) + b) (code layout: rows of W indexed (input i, output j)); Y_g = P_g^T-mixed X_g."""
    bsz, length, c = x.shape
    g, d = op.num_heads, op.reduced_dim
    out = torch.empty_like(x)
    for n in range(bsz):
        z = op.compress(x[n])                                             # (L, G d)
        for h in range(g):
            zg = z[:, h * d:(h + 1) * d].reshape(-1)                     # token-major, then reduced channel
            logits = (op.generate.weight @ zg + op.generate.bias).reshape(length, length)   # [input i, output j]
            p = torch.softmax(logits, dim=0)                              # over the inputs, per output
            seg = x[n, :, h * (c // g):(h + 1) * (c // g)]
            out[n, :, h * (c // g):(h + 1) * (c // g)] = p.t() @ seg      # output j = sum_i p[i, j] x_i
    return op.out(out)


def test_operator_matches_the_equations_and_rows_are_convex_combinations():
    torch.manual_seed(0)
    op = DynaMixerOp(8, seq_len=5, num_heads=2, reduced_dim=3).eval()
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(op(x), _reference_op(op, x))
        p = op.mixing_matrices(x)
    assert p.shape == (3, 2, 5, 5)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 5))
    # dynamic: another row's content gives another matrix (a fixed token-mixing MLP would not)
    assert not torch.allclose(p[0], p[1])


def test_other_lengths_error_or_resample():
    torch.manual_seed(0)
    strict = DynaMixerOp(8, seq_len=4, num_heads=2, grid_mismatch="error")
    with pytest.raises(ValueError, match="built for rows of 4 tokens, got 6"):
        strict(torch.randn(1, 6, 8))
    op = DynaMixerOp(8, seq_len=4, num_heads=2, reduced_dim=2)
    assert op.generator(4)[0] is op.generate.weight                       # the built length: unchanged
    with torch.no_grad():                                                 # constant generator: closed form
        op.generate.weight.fill_(0.3)
        op.generate.bias.fill_(-0.2)
    w, b = op.generator(6)
    assert w.shape == (36, 12) and b.shape == (36,)
    torch.testing.assert_close(w, torch.full((36, 12), 0.3 * 4 / 6))     # scaled by L / L'
    torch.testing.assert_close(b, torch.full((36,), -0.2))
    torch.nn.init.normal_(op.generate.weight)                             # = trilinear resizing of the cube
    cube = op.generate.weight.reshape(4, 4, 4, 2).permute(3, 0, 1, 2)[None]
    ref = F.interpolate(cube, size=(6, 6, 6), mode="trilinear", align_corners=False)[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(op.generator(6)[0], ref.reshape(36, 12) * 4 / 6)


def test_block_reach_is_a_cross_and_error_mode_names_the_grid():
    torch.manual_seed(0)
    blk = create_attention("dynamixer", 16, grid=(5, 7), num_heads=4).eval()
    x = torch.randn(1, 35, 16, requires_grad=True)
    y_h, y_w, y_c = blk.branches(x, (5, 7))
    for branch, where in ((y_h, "column"), (y_w, "row"), (y_c, "pixel")):
        (grad,) = torch.autograd.grad(branch[0, 2, 3].sum(), x)
        reach = grad.abs().sum(-1).reshape(5, 7) > 0
        expect = torch.zeros(5, 7, dtype=torch.bool)
        if where == "column":
            expect[:, 3] = True
        elif where == "row":
            expect[2, :] = True
        else:
            expect[2, 3] = True
        assert torch.equal(reach, expect), where
    plain = create_attention("dynamixer", 16, grid=(5, 7), num_heads=4, fusion="sum").eval()   # Algorithm 1
    assert plain.reweight is None
    with torch.no_grad():
        torch.testing.assert_close(plain(x, hw=(5, 7)), plain.proj(sum(plain.branches(x, (5, 7)))).flatten(1, 2))
    strict = create_attention("dynamixer", 16, grid=(5, 7), num_heads=4, grid_mismatch="error")
    assert strict(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)
    with pytest.raises(ValueError, match="built for a 5x7 token grid"):
        strict(torch.randn(1, 16, 7, 5))


def test_stage_grids_are_the_authors_resolutions():
    with torch.device("meta"):
        s = create_model("dynamixer_s", num_classes=10, layers=(1, 1, 1, 1))
        m = create_model("dynamixer_m", num_classes=10, layers=(1, 1, 1, 1))
    assert s.grids == [32, 16, 16, 16] and m.grids == [32, 32, 16, 16]
    assert s.stages[1][0].attn.mix_h.generate.in_features == 16 * 2
    assert s.stages[0][0].attn.mix_w.generate.out_features == 32 * 32
    strict = create_model("dynamixer_s", num_classes=10, layers=(1, 1, 1, 1), embed_dims=(16, 16, 16, 16),
                          num_heads=(2, 2, 2, 2), img_size=28, grid_mismatch="error")
    assert strict(torch.randn(1, 3, 28, 28)).shape == (1, 10)
    with pytest.raises(ValueError, match="built for a 4x4 token grid"):
        strict(torch.randn(1, 3, 35, 28))
