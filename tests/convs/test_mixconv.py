import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.mixconv import mixconv_kernel_sizes, split_channels


@pytest.mark.parametrize("k,sizes", [(1, (1,)), (3, (3,)), (5, (3, 5)), (7, (3, 5, 7)), (9, (3, 5, 7, 9)),
                                     ([3, 5, 7, 9, 11], (3, 5, 7, 9, 11)), ((5, 3), (5, 3))])
def test_kernel_sizes_follow_the_paper(k, sizes):
    # paper Section 3: group i has kernel size 2i + 1, starting at 3x3
    assert mixconv_kernel_sizes(k) == sizes


@pytest.mark.parametrize("channels,groups,split,expected", [
    (32, 4, "equal", [8, 8, 8, 8]), (32, 3, "equal", [12, 10, 10]), (30, 4, "equal", [9, 7, 7, 7]),
    (32, 4, "exponential", [16, 8, 4, 4]), (40, 3, "exponential", [20, 10, 10])])
def test_channel_split(channels, groups, split, expected):
    # equal: remainder to the first group (the authors' _split_channels); exponential: halves (paper Section 3)
    assert split_channels(channels, groups, split) == expected


def test_depthwise_mixconv_is_one_depthwise_conv_with_centred_kernels():
    """Independent float64 reference: each group's k_i x k_i kernel zero-padded, centred, to the largest size
    gives one depthwise convolution; MixConv must equal it (this checks the per-group "same" alignment)."""
    torch.manual_seed(0)
    c = 30
    for stride, size in [(1, (11, 8)), (2, (9, 14)), (2, (7, 5))]:
        m = create_conv("mixconv", c, c, 9, stride=stride, groups=c).double()  # 3, 5, 7, 9 over 9, 7, 7, 7 ch.
        assert m.kernel_sizes == (3, 5, 7, 9) and m.in_splits == (9, 7, 7, 7)
        big = torch.cat([F.pad(conv.weight, [(9 - conv.kernel_size[0]) // 2] * 4) for conv in m.convs])
        x = torch.randn(2, c, *size, dtype=torch.float64)
        torch.testing.assert_close(m(x), F.conv2d(x, big, None, stride, 4, 1, c))


def test_grouped_form_is_block_diagonal():
    """groups=1 (the authors' GroupedConv2D): input split i only reaches output split i, with its own kernel."""
    torch.manual_seed(0)
    m = create_conv("mixconv", 10, 14, 5).double()                    # (3, 5) over in (5, 5) -> out (7, 7)
    assert m.in_splits == (5, 5) and m.out_splits == (7, 7)
    big = torch.zeros(14, 10, 5, 5, dtype=torch.float64)
    big[:7, :5, 1:4, 1:4] = m.convs[0].weight
    big[7:, 5:] = m.convs[1].weight
    x = torch.randn(2, 10, 8, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.conv2d(x, big, None, 1, 2))


@pytest.mark.parametrize("cin,cout,ks,stride,depthwise", [(32, 32, [3, 5, 7], 1, True), (30, 30, [3, 5, 7, 9], 2, True),
                                                          (32, 48, [3, 5], 1, False), (33, 66, [3, 5, 7], 2, True)])
def test_parity_with_timm_mixed_conv(cin, cout, ks, stride, depthwise):
    """timm's MixedConv2d keys '<i>.weight' are our 'convs.<i>.weight'; same split, same outputs."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    theirs = timm_layers.MixedConv2d(cin, cout, ks, stride, depthwise=depthwise)
    ours = create_conv("mixconv", cin, cout, ks, stride=stride, groups=cin if depthwise else 1)
    ours.convs.load_state_dict(theirs.state_dict())
    x = torch.randn(2, cin, 9, 14)
    assert torch.equal(ours(x), theirs(x))


def test_dilated_option_matches_a_sparse_kernel():
    """dilated=True (released MixConv): at stride 1 a k x k group becomes 3x3 with dilation (k - 1) / 2."""
    torch.manual_seed(0)
    m = create_conv("mixconv", 12, 12, 7, groups=12, dilated=True).double()
    assert [(c.kernel_size, c.dilation) for c in m.convs] == [((3, 3), (1, 1)), ((3, 3), (2, 2)), ((3, 3), (3, 3))]
    big = torch.zeros(12, 1, 7, 7, dtype=torch.float64)
    for i, conv in enumerate(m.convs):
        d = conv.dilation[0]
        big[4 * i:4 * i + 4, :, 3 - d:4 + d:d, 3 - d:4 + d:d] = conv.weight
    x = torch.randn(2, 12, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.conv2d(x, big, None, 1, 3, 1, 12))
    strided = create_conv("mixconv", 12, 12, 7, stride=2, groups=12, dilated=True)  # stride 2: plain kernels
    assert [c.kernel_size[0] for c in strided.convs] == [3, 5, 7]


def test_parameter_count():
    # 32 channels over 3, 5, 7 (12, 10, 10 channels): 12*9 + 10*25 + 10*49
    assert sum(p.numel() for p in create_conv("mixconv", 32, 32, 7, groups=32).parameters()) == 848


def test_kernel_sizes_keyword_in_a_backbone():
    model = create_model("resnet18", conv_layer="mixconv", conv_kwargs={"kernel_sizes": (3, 5)}, num_classes=10)
    conv = model.stages[0][0].conv1[0]
    assert conv.kernel_sizes == (3, 5) and conv.in_splits == (32, 32)
    assert model(torch.randn(1, 3, 45, 37)).shape == (1, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        create_conv("mixconv", 16, 16, 4)
    with pytest.raises(ValueError, match="odd"):
        create_conv("mixconv", 16, 16, 3, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="divisible"):
        create_conv("mixconv", 16, 24, 3, groups=16)                   # depthwise needs C_out = m C_in
    with pytest.raises(ValueError, match="every kernel group"):
        create_conv("mixconv", 16, 24, 7, groups=4)                    # splits (6, 5, 5) not divisible by 4
    with pytest.raises(ValueError, match="non-empty"):
        create_conv("mixconv", 2, 2, 7, groups=2)
    with pytest.raises(ValueError, match="split"):
        create_conv("mixconv", 16, 16, 5, split="random")
    with pytest.raises(ValueError, match="dilated"):
        create_conv("mixconv", 16, 16, 5, dilated=True, dilation=2)


def test_no_graph_breaks():
    m = create_conv("mixconv", 16, 16, 7, groups=16, stride=2)
    assert torch._dynamo.explain(m)(torch.randn(2, 16, 9, 7)).graph_break_count == 0
