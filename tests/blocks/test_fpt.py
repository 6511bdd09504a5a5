"""Feature Pyramid Transformer (zhang2020feature): its three transformers against the authors' formulation written
out (self_trans.py, grounding_trans.py, rendering_trans.py), and the node's wiring. The registry-wide tests cover
shapes, batch 1, odd sizes, train/eval and gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block
from attnzoo.blocks.fpt import GroundingTransformer, RenderingTransformer, SelfTransformer


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module.double().eval()


def test_self_transformer_is_a_mixture_of_softmaxes():
    """The code's MixtureOfSoftMax: per-group softmax(q_i k_i / sqrt(d_k)) maps mixed by softmax(W mean q), one v."""
    torch.manual_seed(0)
    st = _randomise(SelfTransformer(8, num_mix=2))
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    q = st.qk(x).flatten(2)
    pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    k, v = st.qk(pooled).flatten(2), st.v(pooled).flatten(2)
    pi = torch.softmax(st.mix @ q.mean(2, keepdim=True), dim=1)                 # (N, 2, 1)
    attn = sum(pi[:, i, :, None] * torch.softmax(q[:, 4 * i:4 * i + 4].transpose(1, 2) @ k[:, 4 * i:4 * i + 4]
                                                 / math.sqrt(8), dim=-1) for i in range(2))
    out = (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(2, 8, 6, 4)
    torch.testing.assert_close(st(x), x + _bn(F.conv2d(out, st.proj.weight), st.norm))


def test_grounding_transformer_dot_mode():
    """z = BN(W_z (f / N_c) g), f = theta(fine)^T phi(coarse): the N_f x N_c matrix the code builds."""
    torch.manual_seed(0)
    gt = _randomise(GroundingTransformer(8))
    fine, coarse = torch.randn(2, 8, 6, 5, dtype=torch.float64), torch.randn(2, 8, 3, 3, dtype=torch.float64)
    f = gt.theta(fine).flatten(2).transpose(1, 2) @ gt.phi(coarse).flatten(2)       # (N, 30, 9)
    y = (f / 9) @ gt.g(coarse).flatten(2).transpose(1, 2)                           # (N, 30, 4)
    torch.testing.assert_close(gt(fine, coarse), gt.out(y.transpose(1, 2).reshape(2, 4, 6, 5)))
    assert not GroundingTransformer(8)(fine.float(), coarse.float()).any()          # zero BN: starts silent


def test_rendering_transformer_and_far_levels():
    torch.manual_seed(0)
    rt = _randomise(RenderingTransformer(8))
    coarse, fine = torch.randn(2, 8, 3, 4, dtype=torch.float64), torch.randn(2, 8, 6, 8, dtype=torch.float64)
    gate = F.relu(_bn(F.conv2d(fine.mean((2, 3), keepdim=True), rt.gate[0].weight), rt.gate[1]))
    mask = _bn(F.conv2d(coarse, rt.mask[0].weight, padding=1), rt.mask[1])
    down = _bn(F.conv2d(fine, rt.down[0].weight, stride=2, padding=1), rt.down[1])
    torch.testing.assert_close(rt(coarse, fine), F.relu(down + mask * gate))
    far = torch.randn(2, 8, 12, 16, dtype=torch.float64)                            # four times finer
    assert rt(coarse, far).shape == coarse.shape


def test_node_sorts_levels_and_concatenates_five_maps():
    """P4's node: ST, RT with P3 then P2, GT with P5, itself; the other levels may come in any order."""
    torch.manual_seed(0)
    node = create_block("fpt", 8, 6).eval()
    assert node.fuse.in_channels == 5 * 8
    p4, p3, p2, p5 = (torch.randn(1, 8, s, s + 1) for s in (4, 8, 16, 2))
    y = node([p4, p3, p2, p5])
    assert y.shape == (1, 6, 4, 5)
    torch.testing.assert_close(node([p4, p5, p2, p3]), y)
    parts = torch.cat([node.st(p4), node.rt[0](p4, p3), node.rt[1](p4, p2), node.gt[0](p4, p5), p4], 1)
    torch.testing.assert_close(y, node.fuse(parts))
    top = create_block("fpt", 8, 8, num_finer=3, num_coarser=0).eval()                # P5's node
    assert top([p5, p4, p3, p2]).shape == (1, 8, 2, 3)


def test_errors():
    node = create_block("fpt", 8, 8)
    with pytest.raises(ValueError, match="larger"):
        node([torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8)])
    with pytest.raises(ValueError, match="num_mix"):
        create_block("fpt", 9, 8, num_mix=2)
