"""DeiT: the plain models are ViTs; the distillation token, its head and position, the train/eval outputs, and
the authors' distillation loss against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.deit import DistilledVisionTransformer, distillation_loss, fuse_heads
from attnzoo.models.vit import VisionTransformer
from attnzoo.registry import model_entry


def _tiny(**kw):
    return create_model("deit_tiny_distilled_patch16_224", num_classes=10, depth=2, **kw)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_plain_deit_is_the_vit_of_the_same_size(size):
    deit, vit = model_entry(f"deit_{size}_patch16_224"), model_entry(f"vit_{size}_patch16_224")
    assert deit.builder is VisionTransformer and deit.defaults == vit.defaults


def test_distilled_parameters_are_the_vit_plus_token_position_and_head():
    # DeiT-Ti: D = 192, 1000 classes: dist token (D) + its position (D) + head_dist (1000 D + 1000).
    with torch.device("meta"):
        plain = create_model("deit_tiny_patch16_224")
        dist = create_model("deit_tiny_distilled_patch16_224")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(dist) - count(plain) == 192 + 192 + 192 * 1000 + 1000
    assert dist.pos_embed.shape == (1, 2 + 14 * 14, 192)


def test_eval_averages_the_two_heads_and_training_returns_the_pair_when_asked():
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        cls_logits, dist_logits = m.forward_heads(x)
        assert not torch.allclose(cls_logits, dist_logits)
        torch.testing.assert_close(m(x), (cls_logits + dist_logits) / 2)
        m.train()  # no dropout / drop path in this configuration: deterministic
        torch.testing.assert_close(m(x), (cls_logits + dist_logits) / 2)  # contract default: (N, classes)
        pair = m.set_distilled_training(True)(x)
        assert isinstance(pair, tuple) and len(pair) == 2
        torch.testing.assert_close(pair[0], cls_logits)
        torch.testing.assert_close(pair[1], dist_logits)
        assert isinstance(m.eval()(x), torch.Tensor)  # eval: the average even in distilled training mode
    assert _tiny(distilled_training=True).train()(x)[1].shape == (2, 10)


def test_head_fusion_by_hand():
    # Class head (0, 0) -> softmax (1/2, 1/2); distillation head (ln 3, 0) -> (3/4, 1/4).
    cls_logits, dist_logits = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    torch.testing.assert_close(fuse_heads(cls_logits, dist_logits), torch.tensor([[math.log(3) / 2, 0.0]]))
    torch.testing.assert_close(fuse_heads(cls_logits, dist_logits, "softmax").exp(), torch.tensor([[0.625, 0.375]]))
    # The two fusions can disagree: mean logits (0.5, 0.5, 1) pick class 2; mean probabilities
    # (0.366, 0.491, 0.143) pick class 1.
    a, b = torch.tensor([[6.0, 0.0, 5.0]]), torch.tensor([[-5.0, 1.0, -3.0]])
    assert fuse_heads(a, b).argmax().item() == 2 and fuse_heads(a, b, "softmax").argmax().item() == 1
    m = _tiny(head_fusion="softmax").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), fuse_heads(*m.forward_heads(x), "softmax"))
    with pytest.raises(ValueError, match="head_fusion"):
        _tiny(head_fusion="max")


def test_identical_tokens_with_identical_heads_give_identical_logits():
    """If the distillation token, its position and its head equal the class token's, the two outputs agree:
    the tokens are symmetric in every block (each attends to both)."""
    torch.manual_seed(0)
    m = _tiny().eval()
    with torch.no_grad():
        m.dist_token.copy_(m.cls_token)
        m.pos_embed[:, 1].copy_(m.pos_embed[:, 0])
        m.head_dist.load_state_dict(m.head.state_dict())
        cls_logits, dist_logits = m.forward_heads(torch.randn(2, 3, 48, 64))
    torch.testing.assert_close(cls_logits, dist_logits, rtol=0, atol=1e-5)


def test_the_distillation_token_takes_part_in_attention():
    """Changing the distillation token changes the class head's output (it is in the sequence, not a side head)."""
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = m.forward_heads(x)[0]
        m.dist_token.add_(torch.randn_like(m.dist_token))  # not a constant: LayerNorm would remove it
        after = m.forward_heads(x)[0]
    assert (after - before).abs().max() > 1e-4


def test_position_embedding_keeps_both_token_positions_and_resizes_the_grid():
    torch.manual_seed(0)
    m = _tiny()
    with torch.no_grad():
        assert m.position_embedding((14, 14)) is m.pos_embed
        pos = m.position_embedding((5, 3))
    assert pos.shape == (1, 2 + 15, 192)
    torch.testing.assert_close(pos[:, :2], m.pos_embed[:, :2])
    grid = m.pos_embed[:, 2:].detach().reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(5, 3), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pos[:, 2:], expected)
    assert m(torch.randn(1, 3, 67, 45)).shape == (1, 10)


def test_hard_distillation_loss_by_hand():
    # 4 classes. Class head: zeros, label 1 -> CE = ln 4. Distillation head: (2, 0, 0, 0), teacher argmax 0 ->
    # CE = ln(1 + 3 e^-2). alpha = 1/2 (the paper's Eq. 3).
    cls_logits = torch.zeros(1, 4, dtype=torch.float64)
    dist_logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[5.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    got = distillation_loss((cls_logits, dist_logits), torch.tensor([1]), teacher, kind="hard")
    assert got.item() == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(1 + 3 * math.exp(-2)), rel=1e-12)
    none = distillation_loss((cls_logits, dist_logits), torch.tensor([1]), kind="none")
    assert none.item() == pytest.approx(math.log(4), rel=1e-12)


@pytest.mark.parametrize("reduction,denominator", [("numel", 2 * 3), ("batchmean", 2)])
def test_soft_distillation_loss_by_hand(reduction, denominator):
    tau, alpha = 2.0, 0.3
    cls_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    dist_logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[3.0, 0.0, 1.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    ce = sum(-math.log(math.exp(r[y]) / sum(math.exp(v) for v in r)) for r, y in zip(cls_logits.tolist(), labels))
    kl = 0.0
    for s_row, t_row in zip(dist_logits.tolist(), teacher.tolist()):
        zs, zt = sum(math.exp(v / tau) for v in s_row), sum(math.exp(v / tau) for v in t_row)
        for s, t in zip(s_row, t_row):
            pt, ps = math.exp(t / tau) / zt, math.exp(s / tau) / zs
            kl += pt * math.log(pt / ps)
    expected = (1 - alpha) * ce / 2 + alpha * kl * tau ** 2 / denominator
    got = distillation_loss((cls_logits, dist_logits), labels, teacher, kind="soft", alpha=alpha, tau=tau,
                            kl_reduction=reduction)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_distillation_loss_arguments():
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="kind"):
        distillation_loss((logits, logits), labels, logits, kind="medium")
    with pytest.raises(ValueError, match="pair"):
        distillation_loss(logits, labels, logits, kind="hard")
    with pytest.raises(ValueError, match="teacher_logits"):
        distillation_loss((logits, logits), labels, None, kind="soft")
    assert distillation_loss(logits, labels, kind="none").item() == pytest.approx(math.log(3))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        DistilledVisionTransformer(num_classes=0)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("deit_small_distilled_patch16_224", img_size=100)
