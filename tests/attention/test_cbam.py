import pytest
import torch

from attnzoo import create_attention


def test_channel_gate_uses_avg_and_max_through_one_mlp():
    torch.manual_seed(0)
    cbam = create_attention("cbam", 16, rd_ratio=1 / 4, use_spatial=False)
    x = torch.randn(2, 16, 5, 9)
    mlp = cbam.channel.mlp
    expected = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(cbam(x), x * expected)


def test_spatial_gate_equation_without_norm():
    torch.manual_seed(0)
    cbam = create_attention("cbam", 8, spatial_norm=False)
    x = torch.randn(1, 8, 6, 7)
    refined = x * cbam.channel(x)
    desc = torch.cat([refined.amax(1, keepdim=True), refined.mean(1, keepdim=True)], 1)  # authors' order
    torch.testing.assert_close(cbam(x), refined * torch.sigmoid(cbam.spatial.conv(desc)))


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        create_attention("cbam", 8, kernel_size=6)


def _authors_state(c, rd, k, generator):
    """Random weights under the names and shapes of the authors' CBAM (Jongchan/attention-module, MODELS/cbam.py)."""
    g = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    return {
        "ChannelGate.mlp.1.weight": g(rd, c) * 0.3, "ChannelGate.mlp.1.bias": g(rd) * 0.1,
        "ChannelGate.mlp.3.weight": g(c, rd) * 0.3, "ChannelGate.mlp.3.bias": g(c) * 0.1,
        "SpatialGate.spatial.conv.weight": g(1, 2, k, k) * 0.2,
        "SpatialGate.spatial.bn.weight": g(1) * 0.2 + 1, "SpatialGate.spatial.bn.bias": g(1) * 0.1,
        "SpatialGate.spatial.bn.running_mean": g(1) * 0.5, "SpatialGate.spatial.bn.running_var": g(1).abs() + 0.5,
    }


def _authors_forward(sd, x):
    """Float64 eval-mode forward of the authors' CBAM, written from their code: channel gate on avg- and max-pooled
    vectors through one Linear-ReLU-Linear MLP; spatial gate on cat([max over C, mean over C]) through a
    bias-free conv, BatchNorm (eps 1e-5) and a sigmoid."""
    mlp = lambda v: (torch.relu(v @ sd["ChannelGate.mlp.1.weight"].T + sd["ChannelGate.mlp.1.bias"])  # noqa: E731
                     @ sd["ChannelGate.mlp.3.weight"].T + sd["ChannelGate.mlp.3.bias"])
    att = mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3)))
    x = x * torch.sigmoid(att)[:, :, None, None]
    compress = torch.stack([x.amax(dim=1), x.mean(dim=1)], dim=1)
    k = sd["SpatialGate.spatial.conv.weight"].shape[-1]
    z = torch.nn.functional.conv2d(compress, sd["SpatialGate.spatial.conv.weight"], padding=(k - 1) // 2)
    z = ((z - sd["SpatialGate.spatial.bn.running_mean"]) / torch.sqrt(sd["SpatialGate.spatial.bn.running_var"] + 1e-5)
         * sd["SpatialGate.spatial.bn.weight"] + sd["SpatialGate.spatial.bn.bias"])
    return x * torch.sigmoid(z)


def test_authors_checkpoint_layout_reproduces_their_forward():
    c, rd, k = 32, 2, 7
    sd = _authors_state(c, rd, k, torch.Generator().manual_seed(0))
    ours = {  # the same tensors under our names; only the MLP's Linear weights gain two singleton axes
        "channel.mlp.0.weight": sd["ChannelGate.mlp.1.weight"][:, :, None, None],
        "channel.mlp.0.bias": sd["ChannelGate.mlp.1.bias"],
        "channel.mlp.2.weight": sd["ChannelGate.mlp.3.weight"][:, :, None, None],
        "channel.mlp.2.bias": sd["ChannelGate.mlp.3.bias"],
        "spatial.conv.weight": sd["SpatialGate.spatial.conv.weight"],
        **{f"spatial.norm.{n}": sd[f"SpatialGate.spatial.bn.{n}"]
           for n in ("weight", "bias", "running_mean", "running_var")},
    }
    cbam = create_attention("cbam", c).double().eval()
    missing, unexpected = cbam.load_state_dict(ours, strict=False)
    assert unexpected == [] and all(m.endswith("num_batches_tracked") for m in missing)
    x = torch.randn(2, c, 9, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), _authors_forward(sd, x), rtol=1e-12, atol=1e-12)


def test_spatial_batchnorm_settings_follow_the_authors():
    cbam = create_attention("cbam", 16)
    bn = cbam.spatial.norm
    assert bn.momentum == 0.01 and bn.eps == 1e-5 and cbam.spatial.conv.bias is None
    assert torch.equal(bn.weight, torch.zeros(1))  # their ResNet zeroes the SpatialGate BatchNorm's scale
    with torch.no_grad():
        gate = cbam.eval().spatial(torch.randn(2, 16, 5, 6))
    torch.testing.assert_close(gate, torch.full_like(gate, 0.5))
    assert torch.equal(create_attention("cbam", 16, spatial_zero_init=False).spatial.norm.weight, torch.ones(1))
