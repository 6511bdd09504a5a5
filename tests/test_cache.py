"""The MAC cache (attnzoo.cache): a count is reused only for the same model, input shape and source version, and
models it cannot fingerprint are counted every time; meta builds skip random fills, other builds do not."""
import pickle

import pytest
import torch

from attnzoo import cache, create_model, nbtools


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNZOO_CACHE", str(tmp_path))
    return tmp_path / "macs"


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **{"num_classes": 10, **kw})


def test_fingerprint_tells_configurations_and_shapes_apart():
    base = cache.fingerprint(_meta("resnet18"), (1, 3, 64, 64))
    assert base == cache.fingerprint(_meta("resnet18"), (1, 3, 64, 64))
    assert base != cache.fingerprint(_meta("resnet18"), (1, 3, 64, 65))
    assert base != cache.fingerprint(_meta("resnet18", attn_layer="se"), (1, 3, 64, 64))
    assert base != cache.fingerprint(_meta("resnet18", num_classes=11), (1, 3, 64, 64))
    se = cache.fingerprint(_meta("resnet18", attn_layer="se"), (1, 3, 64, 64))
    assert se != cache.fingerprint(_meta("resnet18", attn_layer="se", attn_kwargs=dict(rd_ratio=0.5)), (1, 3, 64, 64))


def test_a_plain_attribute_that_changes_the_computation_changes_the_key():
    a, b = _meta("resnet18"), _meta("resnet18")
    b.some_flag = True  # stands for any configuration attribute a forward may read
    assert cache.fingerprint(a, (1, 3, 32, 32)) != cache.fingerprint(b, (1, 3, 32, 32))


def test_count_is_stored_once_and_reused(folder, monkeypatch):
    calls = []
    model = _meta("resnet18")
    for _ in range(2):
        assert cache.cached_macs(model, (1, 3, 32, 32), lambda: calls.append(1) or 123) == 123
    assert calls == [1] and len(list(folder.glob("*.json"))) == 1
    # through nbtools.measure: the first count is the real one, the second is read back without counting
    expected = nbtools.count_macs(create_model("resnet18", num_classes=10), torch.zeros(1, 3, 40, 24))
    assert nbtools.measure(lambda: create_model("resnet18", num_classes=10), (1, 3, 40, 24))[1] == expected
    monkeypatch.setattr(nbtools, "count_macs", lambda *a, **k: pytest.fail("counted again"))
    assert nbtools.measure(lambda: create_model("resnet18", num_classes=10), (1, 3, 40, 24))[1] == expected


def test_unfingerprintable_models_are_counted_every_time(folder):
    model = _meta("resnet18")
    model.callback = lambda x: x  # a lambda has no stable identity across processes
    assert cache.fingerprint(model, (1, 3, 32, 32)) is None
    calls = []
    for _ in range(2):
        cache.cached_macs(model, (1, 3, 32, 32), lambda: calls.append(1) or 5)
    assert calls == [1, 1] and not folder.exists()


def test_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ATTNZOO_CACHE", "off")
    calls = []
    for _ in range(2):
        cache.cached_macs(_meta("resnet18"), (1, 3, 32, 32), lambda: calls.append(1) or 5)
    assert calls == [1, 1]


def test_random_fills_are_skipped_only_on_meta():
    torch.manual_seed(0)
    weight = create_model("resnet18", num_classes=10).stages[0][0].conv1[0].weight
    assert weight.std() > 0.01  # He-initialised as usual on the CPU
    assert _meta("vit_tiny_patch16_224").pos_embed.is_meta
    torch.manual_seed(0)
    again = create_model("resnet18", num_classes=10).stages[0][0].conv1[0].weight
    torch.testing.assert_close(again, weight)  # the fills are restored after the meta build


def test_models_keeping_a_layer_factory_pickle():
    model = create_model("efficientnet_b0", num_classes=10, attn_layer="eca")
    assert type(pickle.loads(pickle.dumps(model))).__name__ == type(model).__name__


def _package(root, files: dict):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_results_are_remembered_with_the_paper_files_they_depend_on(tmp_path, monkeypatch):
    pkg = _package(tmp_path / "attnzoo", {"registry.py": "", "layers/norm.py": "", "models/__init__.py": "",
                                          "models/deit.py": "from .vit import Block\n", "models/vit.py": "",
                                          "models/other.py": "", "attention/se.py": ""})
    monkeypatch.setattr(cache, "PACKAGE", pkg)
    monkeypatch.setenv("ATTNZOO_CACHE", str(tmp_path / "cache"))
    cache._shared_hash.cache_clear()
    calls = []

    def build():
        calls.append(1)
        return {"built": len(calls)}, {"attnzoo.models.deit", "attnzoo.attention.se", "torch.nn.modules.conv"}

    def edit(rel):
        path = pkg / rel
        path.write_text(path.read_text() + "# edited\n")
        cache._shared_hash.cache_clear()

    assert cache.cached_by_files("demo", build) == {"built": 1}
    assert cache.cached_by_files("demo", build) == {"built": 1} and len(calls) == 1
    edit("models/other.py")  # a paper the build does not use
    assert cache.cached_by_files("demo", build) == {"built": 1} and len(calls) == 1
    for rel in ("models/vit.py", "attention/se.py", "models/deit.py", "layers/norm.py", "models/__init__.py"):
        edit(rel)  # imported by deit; the class of a built submodule; the paper itself; shared code (twice)
        before = len(calls)
        assert cache.cached_by_files("demo", build) == {"built": before + 1}, rel
    assert cache.cached_by_files("never", lambda: (calls.append(1) or "failed", None)) == "failed"
    assert cache.cached_by_files("never", lambda: (calls.append(1) or "failed", None)) == "failed"
    assert calls.count(1) == 8, "a value without modules is never remembered"
