import pytest
import torch

from attnzoo import create_attention


@pytest.mark.parametrize("channels,k", [(16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_kernel_size_follows_the_paper(channels, k):
    # psi(C) = |log2(C)/2 + 1/2|_odd; e.g. C = 256: 4.5 -> 5, C = 2048: 6 -> 7 (ties upwards as the authors' code)
    assert create_attention("eca", channels).kernel_size == k
    assert create_attention("eca", channels).conv.weight.numel() == k


def test_eca_matches_a_1d_convolution_over_channels():
    torch.manual_seed(0)
    eca = create_attention("eca", 64)
    x = torch.randn(2, 64, 5, 7)
    y = torch.nn.functional.pad(x.mean(dim=(2, 3)), (1, 1))
    w = eca.conv.weight.flatten()
    z = w[0] * y[:, :-2] + w[1] * y[:, 1:-1] + w[2] * y[:, 2:]
    torch.testing.assert_close(eca(x), x * torch.sigmoid(z)[:, :, None, None])


def test_interaction_is_local():
    torch.manual_seed(0)
    eca = create_attention("eca", 256)  # k = 5: channels 10..14 decide the gate of channel 12
    x = torch.randn(1, 256, 4, 4)
    x2 = x.clone()
    x2[:, 20] += 5.0
    changed = ((eca.weights(x) - eca.weights(x2)).flatten().abs() > 0).nonzero().flatten().tolist()
    assert changed == [18, 19, 20, 21, 22]


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("eca", 64, kernel_size=4)


def test_eca_resnet50_is_the_released_model_with_hand_set_kernels():
    from attnzoo import create_model

    model = create_model("eca_resnet50")
    kernels = [[block.attn.kernel_size for block in stage] for stage in model.stages]
    assert kernels == [[3] * 3, [5] * 4, [5] * 6, [7] * 3]  # authors' eca_resnet50(k_size=[3, 5, 5, 7])
    assert sum(b.attn.conv.weight.numel() for s in model.stages for b in s) == 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7
    formula = create_model("resnet50", attn_layer="eca")  # the adaptive psi(C) stays available: 5, 5, 5, 7
    assert [stage[0].attn.kernel_size for stage in formula.stages] == [5, 5, 5, 7]
