"""Data for ``attnzoo train``: CIFAR-10/100 from the python-pickle batches, or an ImageFolder tree.

CIFAR is held in memory as uint8 tensors (N, 3, 32, 32); its augmentation (random crop of the image padded by 4
zero pixels, horizontal flip; as torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``) runs per
batch with a generator seeded by (seed, epoch, rank), so a resumed run draws exactly the same crops. An ImageFolder
(``PATH/train/<class>/*.jpg`` and ``PATH/val`` or ``PATH/test``) is decoded by torchvision in loader workers.
Nothing is downloaded unless asked (``download=True``).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .errors import TrainError


@dataclass(frozen=True)
class CifarSpec:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str
    url: str
    md5: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR = {   # mean/std: per-channel statistics of the training images
    "cifar10": CifarSpec("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                         "batches.meta", "label_names", "labels", _URL + "cifar-10-python.tar.gz",
                         "c58f30108f718f92721af3b95e74349a", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": CifarSpec("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
                          _URL + "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                          (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, 3, H, W) and labels (N,); fetched a batch at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]


def _whole_batch(batch):
    return batch


@dataclass
class ImageData:
    """A dataset ready for training: its two splits, classes and normalisation.

    ``in_memory`` data (CIFAR) yields uint8 batches that ``prepare`` augments and normalises on the device;
    folder data yields normalised float batches from torchvision transforms.
    """

    name: str
    train: Dataset
    test: Dataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _cifar_folder(path: Path, spec: CifarSpec) -> Path | None:
    for folder in (path / spec.folder, path):
        if all((folder / f).is_file() for f in (*spec.train, *spec.test, spec.meta)):
            return folder
    return None


def _missing(name: str, root: Path) -> TrainError:
    spec = CIFAR[name]
    return TrainError(
        f"{name} not found in {root.resolve()} (looked for {spec.folder}/ there and for the batch files in it). "
        f"Download {spec.url} ({'163' if name == 'cifar10' else '161'} MB), extract it there with "
        f"`tar xzf {spec.url.rsplit('/', 1)[1]} -C {root}`, or pass --data-dir DIR (or set ATTNZOO_DATA) to "
        f"where it is, or add --download to fetch it now")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise TrainError(f"{path} is not a CIFAR python-pickle batch: {exc}") from None


def load_cifar(name: str, folder: Path) -> ImageData:
    """CIFAR-10/100 from the folder holding its python-pickle batches (the folder itself or its parent)."""
    spec = CIFAR[name]
    found = _cifar_folder(folder, spec)
    if found is None:
        raise _missing(name, folder)

    def split(files) -> TensorImages:
        images, labels = [], []
        for f in files:
            batch = _unpickle(found / f)
            if "data" not in batch or spec.labels_key not in batch:
                raise TrainError(f"{found / f} lacks the 'data' or '{spec.labels_key}' entry of a {name} batch")
            images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[spec.labels_key], dtype=torch.long))
        return TensorImages(torch.cat(images), torch.cat(labels))

    classes = list(_unpickle(found / spec.meta)[spec.names_key])
    train, test = split(spec.train), split(spec.test)
    for part, data in (("train", train), ("test", test)):
        if len(data.labels) and int(data.labels.max()) >= len(classes):
            raise TrainError(f"{found}: {part} labels reach {int(data.labels.max())} but the meta file lists "
                             f"{len(classes)} classes")
    return ImageData(name, train, test, classes, spec.mean, spec.std, in_memory=True)


def download_cifar(name: str, root: Path) -> None:
    """Fetch and extract the python version of CIFAR-10/100 into ``root`` (checks the archive's MD5)."""
    spec = CIFAR[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.url.rsplit("/", 1)[1]
    print(f"downloading {spec.url} to {archive}", flush=True)
    urllib.request.urlretrieve(spec.url, archive)  # noqa: S310 (a fixed https URL)
    if hashlib.md5(archive.read_bytes()).hexdigest() != spec.md5:  # noqa: S324 (integrity, not security)
        raise TrainError(f"{archive}: MD5 mismatch, the download is corrupt; delete it and retry")
    with tarfile.open(archive) as tar:
        tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    archive.unlink()


def load_image_folder(path: Path, image_size: int) -> ImageData:
    """``path/train/<class>/...`` and ``path/val`` (or ``path/test``) through torchvision's ImageFolder.

    Training: RandomResizedCrop + flip (for images of 64 pixels or less: resize, then a random crop with 1/8
    padding + flip, the CIFAR recipe); evaluation: resize to size/0.875 and centre crop (ImageNet's protocol).
    """
    test_dir = next((path / d for d in ("val", "test") if (path / d).is_dir()), None)
    if not (path / "train").is_dir() or test_dir is None:
        raise TrainError(f"{path} is neither a CIFAR folder nor an image folder: an image folder needs "
                         f"{path}/train/<class>/ and {path}/val/<class>/ (or test/)")
    try:
        from torchvision import datasets, transforms as T
    except ImportError:
        raise TrainError("image folders are read with torchvision: pip install torchvision") from None
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if image_size <= 64:
        train_tf = [T.Resize((image_size, image_size)), T.RandomCrop(image_size, padding=image_size // 8)]
        test_tf = [T.Resize((image_size, image_size))]
    else:
        train_tf = [T.RandomResizedCrop(image_size)]
        test_tf = [T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size)]
    train = datasets.ImageFolder(path / "train", T.Compose([*train_tf, T.RandomHorizontalFlip(), *norm]))
    test = datasets.ImageFolder(test_dir, T.Compose([*test_tf, *norm]))
    if train.classes != test.classes:
        raise TrainError(f"{path}: train/ and {test_dir.name}/ have different class folders")
    return ImageData(path.name, train, test, train.classes, IMAGENET_MEAN, IMAGENET_STD, in_memory=False)


def default_data_dir() -> Path:
    return Path(os.environ.get("ATTNZOO_DATA", "data"))


def load_data(data: str, data_dir: str | Path | None = None, image_size: int = 224,
              download: bool = False) -> ImageData:
    """``data``: "cifar10", "cifar100" (found in ``data_dir``, default $ATTNZOO_DATA or ./data) or a path: a CIFAR
    folder (holding ``cifar-10-batches-py``/``cifar-100-python`` or being it) or an ImageFolder tree."""
    if data in CIFAR:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if _cifar_folder(root, CIFAR[data]) is None and download:
            download_cifar(data, root)
        return load_cifar(data, root)
    path = Path(data)
    if not path.is_dir():
        raise TrainError(f"--data {data!r}: expected cifar10, cifar100 or an existing folder")
    for name, spec in CIFAR.items():
        if _cifar_folder(path, spec) is not None:
            return load_cifar(name, path)
    return load_image_folder(path, image_size)


def shard(dataset: Dataset, rank: int, world: int, seed: int, shuffle: bool) -> DistributedSampler:
    """Rank ``rank``'s share (a DistributedSampler; also for one process). Training drops the ragged tail so
    every rank runs the same number of steps; evaluation uses ``eval_indices`` instead (no padding)."""
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=shuffle)


def eval_indices(n: int, rank: int, world: int) -> list[int]:
    """Every test image exactly once over all ranks (DistributedSampler would pad with repeats)."""
    return list(range(rank, n, world))


def make_loader(data: ImageData, dataset: Dataset, batch_size: int, sampler, workers: int,
                generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    """Training drops the last partial batch (every step has the same size and the schedule its length)."""
    if data.in_memory:   # whole batches from one tensor: no workers, no per-image collation
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_whole_batch,
                          drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last)


def crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded batch and random horizontal flip, per image. (N, C, H, W) -> same."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (n, 1), generator=generator) for _ in range(2))
    flip = torch.rand(n, 1, generator=generator) < 0.5
    rows = dy + torch.arange(h)                                   # (N, H)
    cols = dx + torch.arange(w)                                   # (N, W)
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(n).view(n, 1, 1, 1)
    return padded[batch, torch.arange(c).view(1, c, 1, 1), rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def prepare(data: ImageData, images: torch.Tensor, device: torch.device, image_size: int, train: bool,
            generator: torch.Generator | None = None, channels_last: bool = False) -> torch.Tensor:
    """A loader batch -> the model's float input on ``device`` (augmented if ``train`` for in-memory data)."""
    if data.in_memory:
        if train:
            images = crop_flip(images, 4, generator)
        x = images.to(device, non_blocking=True).float().div_(255)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:   # a model at its own input size
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        x = (x - mean) / std
    else:
        x = images.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
