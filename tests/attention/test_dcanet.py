"""DCANet (ma2020dcanet): connected SE, CBAM and GC attention, alone and chained through a ResNet.

The registry-wide tests cover shapes, batch 1, odd sizes, train/eval and gradients of the unconnected modules."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention
from attnzoo.models.resnet import ResNet


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("name", ["se", "cbam", "gc"])
def test_first_block_is_the_plain_attention(name):
    """Without a predecessor the connected module is SE / CBAM / GC itself, with the same weights."""
    torch.manual_seed(0)
    dca = _randomise(create_attention(f"dca_{name}", 16)).eval()
    plain = create_attention(name, 16).eval()
    plain.load_state_dict(dca.state_dict())
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(dca(x), plain(x))


def _se_reference(m, x, prev):
    """The authors' CSELayer written out: a 1x1 conv over the stacked [GAP; P(prev)] map of shape (N, 2, 1, C)."""
    n, c = x.shape[:2]
    gap = x.mean(dim=(2, 3))
    z = gap
    if prev is not None:
        pre = m.project(prev)
        z = F.conv2d(torch.stack([gap, pre], 1)[:, :, None, :], m.fuse.mix.weight, m.fuse.mix.bias).view(n, c)
        z = F.relu(F.layer_norm(z, (c,), m.fuse.norm.weight, m.fuse.norm.bias))
    s = torch.sigmoid(F.linear(F.relu(F.linear(z, m.fc1.weight.flatten(1), m.fc1.bias)),
                               m.fc2.weight.flatten(1), m.fc2.bias))
    return x * s[:, :, None, None], gap * s


def test_resnet_chains_se_attention_across_blocks_and_stages():
    """ResNet(attn_connect=True) hands each SE's output state (its rescaled squeeze) to the next block's SE,
    projected where the width changes: the logits equal a chain written out block by block."""
    torch.manual_seed(0)
    model = _randomise(ResNet(layers=(2, 1, 1, 1), num_classes=5, attn_layer="dca_se", attn_connect=True)).eval()
    blocks = [b for stage in model.stages for b in stage]
    assert not blocks[0].attn.connected and all(b.attn.connected for b in blocks[1:])
    assert isinstance(blocks[1].attn.project, torch.nn.Identity)          # 256 -> 256 within stage 1
    assert blocks[2].attn.project[0].in_features == 256                   # 256 -> 512 at stage 2
    x = torch.randn(1, 3, 35, 29, dtype=torch.float64)
    model = model.double()
    h, prev = model.stem(x), None
    for b in blocks:
        y, prev = _se_reference(b.attn, b.body(h), prev)
        h = b.act(y + b.shortcut(h))
    torch.testing.assert_close(model(x), model.head(h.mean(dim=(2, 3))))
    # the chain matters: the same weights without the connection give other logits
    unchained = model.head(model.stages(model.stem(x)).mean(dim=(2, 3)))
    assert not torch.allclose(model(x), unchained)


def test_gc_connection_starts_inert():
    """The code's scalar lambda starts at 0, so a fresh connected GC block ignores its predecessor."""
    torch.manual_seed(0)
    m = create_attention("dca_gc", 64, prev_channels=8).eval()
    with torch.no_grad():
        m.transform[-1].weight.normal_()  # GC zero-initialises its last layer: make the output depend on c
    x = torch.randn(2, 64, 5, 7)
    y, t = m.forward_connected(x, torch.randn(2, 8))
    torch.testing.assert_close(y, m(x))
    torch.testing.assert_close(y, x + t[:, :, None, None])
    with torch.no_grad():
        m.weight.fill_(1.0)
    assert not torch.allclose(m.forward_connected(x, torch.randn(2, 8))[0], m(x))


def test_cbam_passes_channel_and_output_maps_at_odd_sizes():
    """DCA-CBAM's state is (channel-gated map, output); the previous output is pooled to the current size, also
    from odd sizes (the code's pooling kernel H_prev // H fails there), and as 2x2 average pooling from 2H."""
    torch.manual_seed(0)
    m = _randomise(create_attention("dca_cbam", 16, prev_channels=8)).eval()
    x = torch.randn(2, 16, 4, 5)
    pc, ps = torch.randn(2, 8, 7, 9), torch.randn(2, 8, 7, 9)
    y, (xc, out) = m.forward_connected(x, (pc, ps))
    assert y.shape == x.shape and out is y
    torch.testing.assert_close(xc, x * m.channel_weights(x, pc))
    torch.testing.assert_close(y, xc * m.spatial_weights(xc, ps))
    assert not torch.allclose(m.spatial_weights(xc, ps), m.spatial_weights(xc, None))
    prev = torch.randn(2, 8, 8, 10)
    torch.testing.assert_close(m.spatial_weights(xc, prev), m.spatial_weights(xc, F.avg_pool2d(prev, 2)))


def test_errors():
    with pytest.raises(ValueError, match="attn_connect"):
        ResNet(layers=(1, 1, 1, 1), attn_connect=True)
    with pytest.raises(ValueError, match="prev_channels"):
        create_attention("dca_se", 16).forward_connected(torch.randn(1, 16, 3, 3), torch.randn(1, 16))
    with pytest.raises(ValueError, match="prev_channels"):
        create_attention("dca_gc", 16, prev_channels=0)
