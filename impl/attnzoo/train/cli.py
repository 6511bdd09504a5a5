"""The ``attnzoo train`` and ``attnzoo results`` subcommands (wired into ``attnzoo.cli``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import TrainError

TRAIN_HELP = "train a registered model (with --attn / --conv modules) on CIFAR or an image folder; write a record"
RESULTS_HELP = "aggregate run records (mean ± std over seeds) into a table and plots"


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help=TRAIN_HELP, description=TRAIN_HELP + ". Several processes: "
                       "torchrun --nproc_per_node=K -m attnzoo train ...")
    p.add_argument("model", help="a registered model, e.g. resnet18_cifar (see attnzoo.list_models())")
    p.add_argument("--attn", help="a registered attention, passed as the model's attn_layer=")
    p.add_argument("--conv", help="a registered convolution, passed as the model's conv_layer=")
    p.add_argument("--model-kwargs", type=_json_object, default={}, metavar="JSON",
                   help='more model arguments as a JSON object, e.g. \'{"layers": [1, 1, 1, 1]}\'')
    p.add_argument("--data", default="cifar10", help="cifar10, cifar100, or a folder: CIFAR python batches "
                   "(or their parent) or an image folder with train/ and val/ (default: %(default)s)")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (default: $ATTNZOO_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="fetch cifar10/cifar100 into --data-dir if missing")
    p.add_argument("--epochs", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.1 x B/128 for SGD, 5e-4 x B/512 for AdamW)")
    p.add_argument("--opt", default="auto", choices=("auto", "sgd", "adamw"),
                   help="auto: SGD for networks with BatchNorm, AdamW otherwise (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, help="(default: 5e-4 for SGD, 0.05 for AdamW)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up before the cosine (default: 0)")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16, or float16 where unsupported)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels on CUDA (slower)")
    p.add_argument("--image-size", type=int, help="input size (default: the model's own: its img_size, 32 for "
                   "*_cifar models, else 224; CIFAR images are resized to it)")
    p.add_argument("--workers", type=int, default=4, help="loader processes for image folders (default: %(default)s)")
    p.add_argument("--out", help="where records go; checkpoints in OUT/checkpoints (default: results/ of the "
                   "checkout, else ./results)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs of this invocation "
                   "(e.g. a job time limit); continue later with --resume")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_results_parser(sub) -> None:
    p = sub.add_parser("results", help=RESULTS_HELP, description=RESULTS_HELP + ".")
    p.add_argument("dir", nargs="?", help="folder of records (default: results/ of the checkout, else ./results)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--plots", help="folder for the figures (default: DIR/plots); 'none' for no figures")


def _results_dir(args, given: str | None) -> Path:
    if given:
        return Path(given)
    return args.root / "results" if getattr(args, "root", None) else Path("results")


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .engine import train

    options = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    options["out"] = str(_results_dir(args, args.out))
    try:
        train(TrainConfig(**options))
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_results(args) -> int:
    from .records import aggregate, load_records, markdown_table, text_table

    folder = _results_dir(args, args.dir)
    if not folder.is_dir():
        print(f"error: no records: {folder} does not exist (write some with `attnzoo train`)", file=sys.stderr)
        return 2
    records, problems = load_records(folder)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not records:
        print(f"error: no run records in {folder} (write some with `attnzoo train`)", file=sys.stderr)
        return 2
    rows = aggregate(records)
    print((markdown_table if args.markdown else text_table)(rows), end="")
    print(f"{len(records)} run(s) in {len(rows)} row(s), from {folder}")
    if args.plots != "none":
        from .report import plot

        for path in plot(rows, Path(args.plots) if args.plots else folder / "plots"):
            print(f"wrote {path}")
    return 0
