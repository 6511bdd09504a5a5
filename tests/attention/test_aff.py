import torch

from attnzoo import create_attention, create_model
from attnzoo.attention.aff import AFF, IAFF


def test_fusion_is_a_convex_combination_and_fixes_equal_inputs():
    torch.manual_seed(0)
    x, y = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 5, 7)
    for fuse in (AFF(16), IAFF(16)):
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


def test_resnets_fuse_every_shortcut():
    for name, n_cams in [("aff_resnet50", 16), ("iaff_resnet50", 32)]:
        model = create_model(name)
        assert sum(type(m).__name__ == "MSCAM" for m in model.modules()) == n_cams
