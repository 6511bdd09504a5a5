"""The evaluation harness: ``attnzoo train`` (train any registered backbone with any attention or convolution on
CIFAR or an image folder, on one or several devices) and ``attnzoo results`` (aggregate the run records).

Modules: ``data`` (datasets, augmentation), ``config`` (options, model building and fit checks), ``engine`` (the
loop, checkpoints, resume), ``distributed`` (DDP under torchrun), ``records`` (JSON records and their aggregation),
``report`` (figures and the book's Evaluation page), ``cli`` (the subcommands), ``errors``.
"""
from __future__ import annotations

import importlib

from .errors import TrainError

_LAZY = {"TrainConfig": "config", "train": "engine", "aggregate": "records", "load_records": "records"}
__all__ = ["TrainConfig", "TrainError", "aggregate", "load_records", "train"]


def __getattr__(name: str):   # torch is imported on first use, not by the command line's start-up
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
