"""Memory formats and autocast across the registry: every feature-map module (attention, conv, block) gives the
same outputs on channels_last inputs (and with channels_last weights) as on contiguous ones, and every module
that uses ``scaled_dot_product_attention`` keeps it on a fused kernel under bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from attnzoo import create_attention, create_block, create_conv, create_model, list_attention, list_blocks, list_convs

CL = torch.channels_last
CHANNELS = 64


def _channels_last(x):
    """A 4-D tensor in channels_last; lists (e.g. pyramid levels) element by element."""
    if isinstance(x, (list, tuple)):
        return type(x)(_channels_last(t) for t in x)
    return x.to(memory_format=CL) if x.dim() == 4 else x


def _same_in_both_formats(module: torch.nn.Module, *inputs: torch.Tensor, tol: float = 1e-4) -> None:
    """Eval-mode outputs for contiguous inputs, channels_last inputs, and channels_last inputs and weights agree."""
    module.eval()
    with torch.no_grad():
        ref = module(*inputs)
        cl_inputs = [_channels_last(x) for x in inputs]
        torch.testing.assert_close(module(*cl_inputs), ref, rtol=tol, atol=tol)
        for t in list(module.parameters()) + list(module.buffers()):  # module.to(memory_format=CL) raises for
            if t.dim() == 4:                                             # 5-D weights (CondConv's experts)
                t.data = t.data.contiguous(memory_format=CL)
        torch.testing.assert_close(module(*cl_inputs), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list_attention())
def test_attention_channels_last(name):
    torch.manual_seed(0)
    _same_in_both_formats(create_attention(name, CHANNELS), torch.randn(2, CHANNELS, 7, 9))


@pytest.mark.parametrize("name", list_convs())
def test_conv_channels_last(name):
    torch.manual_seed(0)
    for stride in (1, 2):
        _same_in_both_formats(create_conv(name, 16, 24, 3, stride=stride), torch.randn(2, 16, 9, 14))


@pytest.mark.parametrize("name", list_blocks())
def test_block_channels_last(name, block_inputs):
    torch.manual_seed(0)
    block = create_block(name, CHANNELS, CHANNELS)
    _same_in_both_formats(block, *block_inputs(block, CHANNELS, 2, 7, 9, "cpu"))


def test_model_channels_last(family_model, shallow, cheap_init):
    """One model per family (see conftest.py), one block per stage (depth only repeats code, and deep networks at
    initialisation are chaotic in eval mode: perturbing CoTNet-50's image by 1e-7 moves its logits by ~4 %, so that
    any two summation orders disagree; shallow ones agree to ~1e-6): channels_last weights and image give the
    logits of the contiguous run (eval, batch 1, odd non-square size). Different conv algorithms sum in different
    orders, and some networks amplify that (ResT-Lite's logits move by 1.5e-5 for a 1e-7 change of the image):
    agreement to 1e-4 of the logits' magnitude, the tolerance of the module tests above."""
    torch.manual_seed(0)
    with cheap_init():
        model = create_model(family_model, num_classes=10, **shallow(family_model)).eval()
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        ref = model(x)
        for t in list(model.parameters()) + list(model.buffers()):  # 5-D weights (CondConv) keep their layout
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=CL)
        out = model(x.contiguous(memory_format=CL))
    tol = 1e-4 * max(ref.abs().max().item(), 1.0)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=tol)


# ---------------------------------------------------------------- SDPA: fused, also under bf16 autocast

# CPU's fused kernels need equal head widths for Q, K and V. By their papers' design, DANet's position attention
# (C/8-wide queries and keys, C-wide values) and EfficientFormer's (keys 32, values 128 wide per head) and LeViT's (values 2 or
# 4 times the keys) differ, so
# on the CPU they run the explicit path (CUDA's memory-efficient kernel fuses them).
UNFUSED_ON_CPU = {"danet_pam", "danet", "efficientformer_attn", "levit_attn"}


def _sdpa_calls(module: torch.nn.Module, x: torch.Tensor, **autocast) -> list[tuple]:
    """(q, k, v dtypes, fused?) of every scaled_dot_product_attention call in one eval forward."""
    calls, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, *args, **kwargs):
        fused = int(torch._fused_sdp_choice(q, k, v, attn_mask)) != int(SDPBackend.MATH)
        calls.append(((q.dtype, k.dtype, v.dtype), fused))
        return real(q, k, v, attn_mask, *args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad(), torch.autocast("cpu", **autocast):
            module(x)
    finally:
        F.scaled_dot_product_attention = real
    return calls


@pytest.mark.parametrize("name", list_attention())
def test_sdpa_is_fused_and_stays_fused_under_bf16_autocast(name):
    torch.manual_seed(0)
    module = create_attention(name, CHANNELS).eval()
    x = torch.randn(2, CHANNELS, 8, 8)
    fp32 = _sdpa_calls(module, x, enabled=False)
    if not fp32:
        return  # no SDPA in this module (test_sdpa_modules_are_found keeps the spy honest)
    bf16 = _sdpa_calls(module, x, dtype=torch.bfloat16)
    assert len(bf16) == len(fp32)
    for (dtypes, fused), (_, fused_fp32) in zip(bf16, fp32):
        assert dtypes == (torch.bfloat16,) * 3, f"{name}: SDPA got {dtypes} under bf16 autocast"
        assert fused == fused_fp32, f"{name}: SDPA leaves its fused kernel under bf16 autocast"
        assert fused or name in UNFUSED_ON_CPU, f"{name}: SDPA runs the unfused math kernel"


def test_sdpa_modules_are_found():
    """The spy above sees the calls of the zoo's plain-attention modules (else every check passes vacuously)."""
    x = torch.randn(2, CHANNELS, 8, 8)
    for name in ("mhsa", "non_local", "halo", "muse"):
        assert _sdpa_calls(create_attention(name, CHANNELS).eval(), x, enabled=False), name
