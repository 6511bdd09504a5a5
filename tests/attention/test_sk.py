import pytest
import torch

from attnzoo import create_attention
from attnzoo.nbtools import count_params


def test_selection_is_a_softmax_over_branches_and_mixes_them():
    torch.manual_seed(0)
    sk = create_attention("sk", 64).eval()
    x = torch.randn(2, 64, 7, 9)
    a = sk.weights(x)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 64))
    branches = [b(x) for b in sk.branches]
    expected = a[:, 0, :, None, None] * branches[0] + a[:, 1, :, None, None] * branches[1]
    torch.testing.assert_close(sk(x), expected)


def test_parameter_count_of_the_paper_unit():
    c, g, m, d = 128, 32, 2, 32  # first SKNet-50 stage: SK[M=2, G=32, r=16, L=32]
    branches = m * (c * (c // g) * 9 + 2 * c)  # grouped 3x3 convs (no bias) + BN
    fuse = c * d + 2 * d  # 1x1 conv (no bias) + BN
    select = d * m * c  # one 1x1 conv to M*C logits (no bias)
    assert count_params(create_attention("sk", c)) == branches + fuse + select


def test_branches_have_3x3_and_5x5_receptive_fields():
    sk = create_attention("sk", 32)
    for branch, span in zip(sk.branches, (3, 5)):
        x = torch.zeros(1, 32, 11, 11, requires_grad=True)
        branch[0](x)[0, :, 5, 5].sum().backward()
        rows = (x.grad[0].abs().sum(0) > 0).nonzero()[:, 0]
        assert rows.max() - rows.min() + 1 == span


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("sk", 48)  # not divisible by 32 groups


def test_sknet101_fuse_widths_follow_the_authors_prototxt():
    from attnzoo import create_model
    from attnzoo.attention.sk import SelectiveKernel
    # implus/SKNet models/sknet101.prototxt, num_output of the B_fc1 layers: conv2_x 32, conv3_x 16, conv4_x 32,
    # conv5_x 64; and the learnable parameters of that prototxt (convolutions, BN scale/shift, fc) add up to
    # 48,686,760 (sknet50.prototxt: 27,479,784)
    model = create_model("sknet101")
    widths = [[m.fuse[0].out_channels for m in stage.modules() if isinstance(m, SelectiveKernel)]
              for stage in model.stages]
    assert widths == [[32] * 3, [16] * 4, [32] * 23, [64] * 3]
    assert count_params(model) == 48_686_760
    assert count_params(create_model("sknet50")) == 27_479_784
    uniform = create_model("sknet101", min_rd=32)
    assert {m.fuse[0].out_channels for m in uniform.stages[1].modules() if isinstance(m, SelectiveKernel)} == {32}
    with pytest.raises(ValueError):
        create_model("sknet101", min_rd=(32, 16))


def test_training_at_batch_one_is_a_clear_error():
    sk = create_attention("sk", 64)
    assert sk.min_train_batch == 2
    x = torch.randn(1, 64, 5, 6)
    with pytest.raises(ValueError, match="SelectiveKernel"):
        sk.train()(x)
    assert sk.eval()(x).shape == x.shape
    assert sk.train()(torch.randn(2, 64, 5, 6)).shape == (2, 64, 5, 6)
