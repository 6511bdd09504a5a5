"""The contract of every registered module kind, parametrized over the registry (see attnzoo.registry)."""
import pytest
import torch
import torch.nn as nn

from attnzoo import (create_attention, create_block, create_conv, create_model, list_attention, list_blocks,
                     list_convs, list_models)
from attnzoo.registry import attention_entry

ATTENTION = list_attention()
CONVS = list_convs()
BLOCKS = list_blocks()
MODELS = list_models()
CHANNELS = 64


def _x(*shape, device="cpu"):
    return torch.randn(*shape, device=device)


# ---------------------------------------------------------------- attention: (N, C, H, W) -> same shape, for all


@pytest.mark.parametrize("name", ATTENTION)
@pytest.mark.parametrize("size", [(2, 16, 16), (2, 7, 9)], ids=["16x16", "7x9"])
def test_attention_maps_feature_maps_to_their_shape(name, size, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device)
    n, h, w = size
    x = _x(n, CHANNELS, h, w, device=device)
    for mode in (m.train, m.eval):
        mode()
        y = m(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in ATTENTION if attention_entry(n).layout == "nlc"])
def test_token_attention_also_takes_tokens_with_their_grid(name, device):
    """(N, L, C) tokens with hw give the same result as the (N, C, H, W) map they come from."""
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device).eval()
    x = _x(2, CHANNELS, 7, 9, device=device)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        from_tokens = m(tokens, hw=(7, 9))
        torch.testing.assert_close(from_tokens.transpose(1, 2).reshape(x.shape), m(x))
    with pytest.raises(ValueError, match="H \\* W must equal L"):
        m(tokens, hw=(7, 8))


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_rejects_a_wrong_layout_with_a_clear_error(name):
    m = create_attention(name, CHANNELS).eval()
    for bad in (_x(2, 32, 7, 9), _x(2, 63, 32), _x(CHANNELS, 7), _x(1, 2, CHANNELS, 4, 4)):
        with pytest.raises(ValueError, match=r"expects \(N, C, H, W\)"):
            m(bad)


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_batch_one(name, device):
    """Batch 1 works in eval mode always, and in training unless a BatchNorm on a pooled descriptor forbids it,
    in which case the module says so itself (min_train_batch = 2)."""
    m = create_attention(name, CHANNELS).to(device)
    x = _x(1, CHANNELS, 5, 11, device=device)
    assert m.eval()(x).shape == x.shape
    m.train()
    if getattr(m, "min_train_batch", 1) > 1:
        with pytest.raises(ValueError, match=f"{type(m).__name__}.*batch of at least 2"):
            m(x)
    else:
        assert m(x).shape == x.shape


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_backward(name, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device).train()
    x = _x(2, CHANNELS, 7, 9, device=device).requires_grad_(True)
    m(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "a parameter got no gradient"


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_eval_deterministic(name, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device).eval()
    x = _x(2, CHANNELS, 7, 9, device=device)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_rejects_bad_channels(name):
    with pytest.raises(ValueError):
        create_attention(name, 0)


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_autocast(name):
    m = create_attention(name, CHANNELS).eval()
    x = _x(2, CHANNELS, 7, 9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", ATTENTION)
def test_every_attention_is_an_attn_layer_of_resnet50(name, device, cheap_init):
    """ResNet-50's bottlenecks with the attention at every width it meets there (256 ... 2048 channels, maps of
    17x12 down to 3x2), one block per stage: the 16-block network repeats the same blocks at 4x the cost."""
    torch.manual_seed(0)
    with cheap_init():
        model = create_model("resnet50", attn_layer=name, num_classes=10, layers=(1, 1, 1, 1))
    model = model.to(device).train()
    x = _x(2, 3, 67, 45, device=device)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    attn_params = [p for stage in model.stages for block in stage for p in block.attn.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in attn_params)


# ---------------------------------------------------------------- conv: drop-in for a padded nn.Conv2d


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 4)])
def test_conv_has_the_output_shape_of_a_padded_conv2d(name, stride, groups, device):
    m = create_conv(name, 16, 24, 3, stride=stride, groups=groups).to(device)
    reference = nn.Conv2d(16, 24, 3, stride, 1, groups=groups)
    for size in [(2, 16, 9, 14), (1, 16, 7, 5)]:
        x = _x(*size, device=device)
        for mode in (m.train, m.eval):
            mode()
            assert m(x).shape == reference(x.cpu()).shape


@pytest.mark.parametrize("name", CONVS)
def test_conv_rejects_a_wrong_layout(name):
    m = create_conv(name, 16, 24, 3)
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\)"):
        m(_x(2, 8, 5, 5))


@pytest.mark.parametrize("name", CONVS)
def test_every_conv_is_a_conv_layer_of_resnet(name, device, cheap_init):
    for depth in ("resnet18", "resnet50"):
        with cheap_init():
            model = create_model(depth, conv_layer=name, num_classes=10).to(device)
        out = model(_x(2, 3, 67, 45, device=device))
        assert out.shape == (2, 10)
        out.square().mean().backward()


# ---------------------------------------------------------------- block: its inputs -> (N, C_out, H, W) of the first


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("size", [(2, 16, 16), (2, 7, 9)], ids=["16x16", "7x9"])
def test_block_maps_its_inputs_to_out_channels(name, size, block_inputs, device):
    """create_block(name, C, C) with the inputs it documents: (N, C, H, W) at the first input's size."""
    torch.manual_seed(0)
    m = create_block(name, CHANNELS, CHANNELS).to(device)
    n, h, w = size
    inputs = block_inputs(m, CHANNELS, n, h, w, device)
    for mode in (m.train, m.eval):
        mode()
        y = m(*inputs)
        assert y.shape == (n, CHANNELS, h, w) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_batch_one_backward_and_autocast(name, block_inputs, device):
    torch.manual_seed(0)
    m = create_block(name, CHANNELS, CHANNELS).to(device)
    assert m.eval()(*block_inputs(m, CHANNELS, 1, 5, 11, device)).shape == (1, CHANNELS, 5, 11)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(m.cpu()(*block_inputs(m, CHANNELS, 1, 5, 11)).float()).all()
    m.to(device).train()
    inputs = block_inputs(m, CHANNELS, max(2, getattr(m, "min_train_batch", 1)), 7, 9, device)
    m(*inputs).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters()), "a parameter got no gradient"


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_images_to_logits_at_odd_sizes(name, family_smallest, shallow, cheap_init):
    """Every registered variant, on the CPU: (N, 3, H, W) -> (N, classes) in eval at batch 1. The smallest variant
    of each family runs as registered; the larger ones keep their widths, heads and stage layout but one block per
    stage (their further blocks repeat the code of the first). Built with ``cheap_init`` and run at 33 x 47, a model
    costs less on the CPU than on the meta device, whose elementwise shape rules run in Python. Training mode at
    batch 2 and another odd size is test_model_forward_backward's (two blocks per stage)."""
    sizes = [((1, 3, 33, 47), False)]
    kwargs = {} if family_smallest(name, MODELS) == name else shallow(name)
    with cheap_init():
        model = create_model(name, num_classes=10, **kwargs)
    with torch.no_grad():
        _check_logits(model, sizes)


def _check_logits(model: nn.Module, sizes) -> None:
    for size, training in sizes:
        model.train(training)
        assert model(torch.zeros(size)).shape == _logits_shape(model, *size)


def _logits_shape(model: nn.Module, n: int, c: int, h: int, w: int) -> tuple:
    """(N, 10) for a classifier; (N, 10, ceil(H / s), ceil(W / s)) for a segmentation model (``output_stride`` s)."""
    s = getattr(model, "output_stride", None)
    return (n, 10) if s is None else (n, 10, -(-h // s), -(-w // s))


def test_model_forward_backward(family_model, device, shallow, cheap_init):
    """One model per family (variants that only scale it run the same code; see conftest.py), for real, with at
    most two blocks per stage (the first, which may downsample, and one that repeats)."""
    torch.manual_seed(0)
    with cheap_init():
        m = create_model(family_model, num_classes=10, **shallow(family_model, blocks=2)).to(device)
    x = _x(2, 3, 67, 45, device=device)  # non-square, odd, not a multiple of any stride
    out = m.train()(x)
    assert out.shape == _logits_shape(m, *x.shape)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad():
        one = _x(1, 3, 33, 47, device=device)
        torch.testing.assert_close(m(one), m(one))
        assert m(one).shape == _logits_shape(m, *one.shape)
