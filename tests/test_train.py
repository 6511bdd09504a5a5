"""The evaluation harness (attnzoo train / results) on a tiny dataset written in the real CIFAR-10 pickle format.

Runs use ResNet-18-CIFAR with one block per stage at 8x8 inputs (a few CPU seconds each); the CIFAR-specific
parts (pickle batches, crop/flip, normalisation) are the same as at 32x32.
"""
import json
import math
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.nn as nn

from attnzoo import create_model
from attnzoo.cli import main
from attnzoo.registry import Entry, _TABLES
from attnzoo.train import TrainConfig, TrainError, train
from attnzoo.train.data import crop_flip, load_data
from attnzoo.train.config import build_model, default_image_size
from attnzoo.train.engine import checkpoint_path, lr_factor, make_optimizer, seed_everything
from attnzoo.train.records import aggregate
from attnzoo.train.report import evaluation_page

N_TRAIN, N_TEST = 32, 20
TINY = {"layers": [1, 1, 1, 1]}


def write_cifar10(root, seed=0):
    """CIFAR-10's python layout: five training batches, a test batch, batches.meta; rows are R, G, B planes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (10, 3, 1, 1))

    def images(n):
        labels = rng.integers(0, 10, n)
        pixels = np.clip(colours[labels] + rng.normal(0, 30, (n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return pixels.reshape(n, 3072), [int(v) for v in labels]

    data, labels = images(N_TRAIN)
    per = N_TRAIN // 5 + 1
    for i in range(5):
        batch = {"batch_label": f"training batch {i + 1} of 5", "data": data[i * per:(i + 1) * per],
                 "labels": labels[i * per:(i + 1) * per]}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    data, labels = images(N_TEST)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("data"))


def config(cifar, out, **kw):
    base = dict(model="resnet18_cifar", model_kwargs=TINY, data=str(cifar), epochs=2, batch_size=8, image_size=8,
                device="cpu", out=str(out), progress=False, lr=0.05)
    return TrainConfig(**{**base, **kw})


def cli_args(cifar, out, *extra):
    return ["train", "resnet18_cifar", "--model-kwargs", json.dumps(TINY), "--data", str(cifar), "--batch-size", "8",
            "--image-size", "8", "--device", "cpu", "--out", str(out), "--no-progress", *extra]


def test_cifar_pickles_load_as_written(cifar):
    data = load_data(str(cifar))
    assert (data.name, data.num_classes, len(data.train), len(data.test)) == ("cifar10", 10, N_TRAIN, N_TEST)
    with open(cifar / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="latin1")
    image, label = data.train[0]
    assert label == first["labels"][0]
    assert torch.equal(image[1], torch.as_tensor(first["data"][0, 1024:2048]).view(32, 32))   # the green plane
    assert load_data("cifar10", data_dir=cifar / "cifar-10-batches-py").name == "cifar10"    # the folder itself


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.uint8).view(2, 3, 5, 7)
    g = torch.Generator().manual_seed(3)
    out = crop_flip(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 5, dx:dx + 7] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_schedule_optimizer_and_input_size_defaults():
    total, warm = 100, 10
    assert [lr_factor(s, total, warm) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(10, total, warm) == 1.0 and lr_factor(55, total, warm) == pytest.approx(0.5)
    assert lr_factor(99, total, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    _, sgd = make_optimizer(create_model("resnet18_cifar", num_classes=10, **TINY), TrainConfig("m", batch_size=256))
    assert sgd == {"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4}     # BatchNorm network: SGD, lr 0.1 x B/128
    vit = create_model("vit_tiny_patch16_224", num_classes=10, depth=1, img_size=32, patch_size=8)
    opt, adamw = make_optimizer(vit, TrainConfig("m", batch_size=1024))
    assert adamw == {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}
    assert all(p.ndim > 1 for p in opt.param_groups[0]["params"]) and opt.param_groups[1]["weight_decay"] == 0
    sizes = [default_image_size(TrainConfig(m)) for m in ("resnet18_cifar", "resnet18", "vit_tiny_patch16_224")]
    assert sizes == [32, 224, 224] and default_image_size(TrainConfig("resnet18", image_size=64)) == 64


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    data = load_data(str(tmp_path), image_size=16)
    assert (data.classes, len(data.train), len(data.test), data.in_memory) == (["cat", "dog"], 6, 4, False)
    assert data.train[0][0].shape == data.test[0][0].shape == (3, 16, 16)
    with pytest.raises(TrainError, match="neither a CIFAR folder nor an image folder"):
        load_data(str(tmp_path / "val"))


def _fixed_batch_loss(model, cifar) -> float:
    """Loss on all training images, unaugmented, with batch statistics (train-mode BN), without updating them."""
    data = load_data(str(cifar))
    x = torch.nn.functional.interpolate(data.train.images.float() / 255, size=(8, 8), mode="bilinear")
    x = (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    with torch.no_grad():
        return nn.functional.cross_entropy(model.train()(x), data.train.labels).item()


@pytest.mark.parametrize("module", [{"attn": "se"}, {"conv": "acnet"}])
def test_training_lowers_the_loss(cifar, tmp_path, module):
    cfg = config(cifar, tmp_path, **module)
    seed_everything(cfg.seed)
    before = build_model(cfg, 10)                 # the engine's initialisation: same seed, same builder
    record = train(cfg)
    after = build_model(cfg, 10)
    after.load_state_dict(torch.load(checkpoint_path(tmp_path, record["run"]))["model"])
    assert _fixed_batch_loss(after, cifar) < 0.8 * _fixed_batch_loss(before, cifar)
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]


def test_resume_continues_bit_for_bit(cifar, tmp_path):
    kw = dict(model_kwargs={**TINY, "drop_path_rate": 0.2})   # stochastic depth: resume must restore the RNG
    straight = train(config(cifar, tmp_path / "a", **kw))
    assert train(config(cifar, tmp_path / "b", stop_after=1, **kw)) is None
    assert not list((tmp_path / "b").glob("*.json"))           # no record for an unfinished run
    resumed = train(config(cifar, tmp_path / "b", resume=True, **kw))
    a = torch.load(checkpoint_path(tmp_path / "a", straight["run"]))["model"]
    b = torch.load(checkpoint_path(tmp_path / "b", resumed["run"]))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_cli_run_writes_a_record_and_results_aggregates_seeds(cifar, tmp_path, capsys):
    assert main(cli_args(cifar, tmp_path, "--attn", "se", "--epochs", "1")) == 0
    [path] = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    model = create_model("resnet18_cifar", num_classes=10, attn_layer="se", **TINY)
    assert (rec["model"], rec["attn"], rec["conv"], rec["dataset"], rec["seed"], rec["epochs"]) == \
        ("resnet18_cifar", "se", None, "cifar10", 0, 1)
    assert rec["params"] == sum(p.numel() for p in model.parameters())
    assert rec["test_images"] == N_TEST and 0 <= rec["top5"] <= 100 and rec["top1"] <= rec["top5"]
    assert rec["macs"] > 0 and rec["images_per_s"] > 0 and rec["wall_time_s"] > 0 and rec["peak_memory_mib"] > 0
    assert rec["torch"] == torch.__version__ and rec["device"] and rec["world_size"] == 1
    for seed, top1 in ((1, 60.0), (2, 70.0)):     # two more seeds of the same recipe, with known accuracies
        (tmp_path / f"s{seed}.json").write_text(json.dumps({**rec, "seed": seed, "top1": top1}))
    capsys.readouterr()
    assert main(["results", str(tmp_path), "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    mean = (rec["top1"] + 130) / 3
    std = float(np.std([rec["top1"], 60.0, 70.0], ddof=1))
    assert f"{mean:.2f} ± {std:.2f}" in out and "3 run(s) in 1 row(s)" in out
    assert (tmp_path / "plots" / "accuracy_vs_params.png").stat().st_size > 0
    assert (tmp_path / "plots" / "accuracy_vs_throughput.png").stat().st_size > 0


def test_evaluation_page_comes_from_records_only(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    evaluation_page(tmp_path / "results", book)
    text = (book / "evaluation.md").read_text()
    assert "No run has been recorded yet" in text and "attnzoo train resnet18_cifar" in text and "![" not in text
    rec = {"format": 1, "dataset": "cifar10", "model": "resnet18_cifar", "attn": "se", "conv": None,
           "model_kwargs": {}, "epochs": 200, "image_size": 32, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
           "label_smoothing": 0.0, "amp": "bfloat16", "top1": 95.0, "top5": 99.8, "images_per_s": 9000.0,
           "wall_time_s": 1800.0, "params": 11_260_354, "macs": 556_000_000, "device": "Some GPU (CUDA 12)"}
    (tmp_path / "results").mkdir()
    for seed in (0, 1):
        (tmp_path / "results" / f"r{seed}.json").write_text(json.dumps({**rec, "seed": seed, "top1": 95.0 + seed}))
    written = evaluation_page(tmp_path / "results", book)
    text = (book / "evaluation.md").read_text()
    assert "95.50 ± 0.71" in text and "`Some GPU (CUDA 12)`" in text
    assert {p.name for p in written} == {"evaluation.md", "accuracy_vs_params.png", "accuracy_vs_throughput.png"}
    assert aggregate([{**rec, "seed": 0}])[0]["top1_std"] == 0.0


def test_ddp_two_cpu_processes(cifar, tmp_path):
    """As users run it: torchrun with two processes (gloo). A subprocess, not a fork of this test process, which may
    already have run autograd (fork and autograd's threads do not mix)."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = cli_args(cifar, tmp_path, "--epochs", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                             "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "attnzoo", *args],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = tmp_path.glob("*.json")                      # rank 0 alone writes
    rec = json.loads(path.read_text())
    assert rec["world_size"] == 2 and rec["device"].startswith("2 x ")
    assert rec["test_images"] == N_TEST                  # every test image once over the two ranks
    assert rec["history"][0]["train_images"] == N_TRAIN // 8 * 8


def test_clear_errors(cifar, tmp_path, capsys, monkeypatch):
    def error(*args) -> str:
        capsys.readouterr()
        assert main(list(args)) == 2
        return capsys.readouterr().err

    err = error("train", "resnet18_cifar", "--data", "cifar10", "--data-dir", str(tmp_path), "--device", "cpu")
    assert "cifar-10-batches-py" in err and "--download" in err and "cifar-10-python.tar.gz" in err
    assert "did you mean cbam" in error(*cli_args(cifar, tmp_path, "--attn", "cbma"))
    assert "unknown model" in error("train", "resnet18_cifr", "--data", str(cifar), "--device", "cpu")
    err = error("train", "vit_tiny_patch16_224", "--conv", "condconv", "--data", str(cifar), "--device", "cpu")
    assert "no place for a conv module" in err and "resnet18_cifar" in err
    assert "--batch-size must be a positive integer" in error(*cli_args(cifar, tmp_path, "--batch-size", "0"))

    def picky(channels):          # a module with a constraint a backbone's width can break
        if channels % 48:
            raise ValueError(f"channels={channels} must be divisible by 48")
        return nn.Identity()

    monkeypatch.setitem(_TABLES["attention"], "picky", Entry("picky", "attention", picky))
    err = error(*cli_args(cifar, tmp_path, "--attn", "picky"))
    assert "attention 'picky' does not fit model 'resnet18_cifar'" in err and "divisible by 48" in err
    assert not list(tmp_path.glob("*.json"))
