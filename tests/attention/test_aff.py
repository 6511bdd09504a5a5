import torch

import pytest

from attnzoo import create_attention, create_block, create_model
from attnzoo.attention.aff import AFF, IAFF


def test_fusion_is_a_convex_combination_and_fixes_equal_inputs():
    torch.manual_seed(0)
    x, y = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 5, 7)
    for fuse in (AFF(16, scale=1.0), IAFF(16)):
        fuse.eval()
        with torch.no_grad():
            z = fuse(x, y)
            assert (z >= torch.minimum(x, y) - 1e-6).all() and (z <= torch.maximum(x, y) + 1e-6).all()
            torch.testing.assert_close(fuse(x, x), x)


def test_aff_uses_ms_cam_of_the_sum_and_code_scale():
    torch.manual_seed(0)
    fuse = AFF(8, scale=2.0).eval()
    x, y = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        m = fuse.cam.weights(x + y)
        torch.testing.assert_close(fuse(x, y), 2 * m * x + 2 * (1 - m) * y)


def test_ms_cam_local_branch_makes_weights_vary_over_space():
    torch.manual_seed(0)
    cam = create_attention("ms_cam", 16).eval()
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        w = cam.weights(x)
        assert w.std(dim=(2, 3)).mean() > 1e-3  # per-position, not only per channel
        cam.local_att[1][1].weight.zero_()  # last BN of the local branch: its output becomes a constant
        w_global = cam.weights(x)
        assert w_global.std(dim=(2, 3)).max() < 1e-6  # only the global (SE-like) branch is left


def test_aff_default_is_the_authors_factor_two():
    assert AFF(8).scale == 2.0


def test_resnets_are_the_authors_imagenet_models():
    """start_layer=3: stages 1-2 add, stages 3-4 (6 + 3 bottlenecks) fuse; ResNet-D stem and avg-pool shortcuts."""
    for name, cams_per_fusion in [("aff_resnet50", 1), ("iaff_resnet50", 2)]:
        model = create_model(name)
        fused = [[b.fuse is not None for b in stage] for stage in model.stages]
        assert fused == [[False] * 3, [False] * 4, [True] * 6, [True] * 3]
        assert sum(type(m).__name__ == "MSCAM" for m in model.modules()) == 9 * cams_per_fusion
        assert [u[0].out_channels for u in model.stem[:3]] == [32, 32, 64]
        assert type(model.stages[1][0].shortcut[0]).__name__ == "AvgPool2d"


def test_fusion_blocks_are_registered_and_refuse_width_changes():
    x, y = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    assert create_block("iaff", 8, 8).eval()(x, y).shape == x.shape
    with pytest.raises(ValueError, match="must equal"):
        create_block("aff", 8, 16)


def test_batch_one_trains_only_in_eval_mode():
    fuse = create_block("aff", 8, 8)
    x = torch.randn(1, 8, 3, 5)
    with pytest.raises(ValueError, match="AFF.*batch of at least 2"):
        fuse.train()(x, x)
    assert fuse.eval()(x, x).shape == x.shape
