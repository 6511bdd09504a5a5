"""Object-contextual representations (yuan2020object), registered as "ocr"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block


def _cbr(t, unit, pad=0):
    conv, bn = unit[0], unit[1]
    t = F.conv2d(t, conv.weight, conv.bias, padding=pad)
    return F.relu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


@torch.no_grad()
def test_ocr_equals_its_equations_built_from_primitives(randomise_bn):
    torch.manual_seed(0)
    block = randomise_bn(create_block("ocr", 6, 8, num_classes=None).eval())
    x, regions = torch.randn(2, 6, 5, 7), torch.randn(2, 3, 5, 7)
    feats = _cbr(x, block.conv3x3_ocr, pad=1)  # (N, 8, H, W)
    m = regions.flatten(2).softmax(dim=2)  # (N, K, HW)
    objects = torch.bmm(m, feats.flatten(2).transpose(1, 2)).transpose(1, 2)[..., None]  # (N, C, K, 1)
    q = _cbr(_cbr(feats, block.f_pixel[0]), block.f_pixel[1]).flatten(2).transpose(1, 2)  # (N, HW, D)
    k = _cbr(_cbr(objects, block.f_object[0]), block.f_object[1]).flatten(2)  # (N, D, K)
    v = _cbr(objects, block.f_down[0]).flatten(2).transpose(1, 2)  # (N, K, D)
    relation = torch.softmax(q @ k / 4 ** 0.5, dim=-1)  # (N, HW, K), D = 4
    context = _cbr((relation @ v).transpose(1, 2).reshape(2, 4, 5, 7), block.f_up[0])
    torch.testing.assert_close(block(x, regions), _cbr(torch.cat([context, feats], 1), block.fuse))


@torch.no_grad()
def test_region_representation_is_the_mean_over_a_hard_region():
    """Logits of +-50 make softmax_{HW} uniform over the region: f_k is the mean of the features inside it."""
    feats = torch.randn(1, 4, 6, 5)
    mask = torch.zeros(1, 2, 6, 5)
    mask[0, 0, :3] = 1  # top half
    mask[0, 1, 3:] = 1  # bottom half
    objects = create_block("ocr", 4, 4).gather(feats, 100 * mask - 50)
    torch.testing.assert_close(objects[0, :, 0, 0], feats[0, :, :3].mean(dim=(1, 2)))
    torch.testing.assert_close(objects[0, :, 1, 0], feats[0, :, 3:].mean(dim=(1, 2)))


@torch.no_grad()
def test_with_a_single_region_every_pixel_gets_the_same_context():
    block = create_block("ocr", 4, 8, num_classes=1).eval()
    feats = torch.randn(2, 8, 5, 6)
    objects = block.gather(feats, torch.randn(2, 1, 5, 6))
    context = block.context(feats, objects)
    torch.testing.assert_close(context, context[..., :1, :1].expand_as(context))


def test_hrnet_ocr_head_widths():
    """HRNet-W48 features (720 channels), OCR width 512, keys 256, Cityscapes K = 19: the authors' head."""
    with torch.device("meta"):
        block = create_block("ocr", 720, 512)
    aux = (720 * 720 + 720) + 2 * 720 + (720 * 19 + 19)
    conv3x3 = 720 * 512 * 9 + 512 + 2 * 512
    attention = 2 * (512 * 256 + 256 * 256 + 4 * 256) + (512 * 256 + 2 * 256) + (256 * 512 + 2 * 512)
    fuse = 1024 * 512 + 2 * 512
    assert sum(p.numel() for p in block.parameters()) == aux + conv3x3 + attention + fuse


def test_ocr_input_errors():
    x = torch.randn(1, 4, 5, 6)
    with pytest.raises(ValueError, match="num_classes"):
        create_block("ocr", 4, 4, num_classes=None)(x)
    with pytest.raises(ValueError, match="regions must be"):
        create_block("ocr", 4, 4)(x, torch.randn(1, 3, 5, 5))
