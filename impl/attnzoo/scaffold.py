"""``attnzoo new ID``: scaffold a paper's YAML, BibTeX stub, module stub and notebook; never overwrite."""
from __future__ import annotations

from pathlib import Path

import nbformat

from .catalogue import ID_RE
from .problems import Problem, ProblemsError

PARAMETERS = 'device = "cpu"\nbatch_size = 2\nimage_size = 64\nchannels = 64\nseed = 0'


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    """Write a clean (output-free) notebook; ``cells`` are (kind, source) with kind "md", "code" or "params".

    The "params" cell is tagged ``parameters`` for papermill.
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source.strip("\n")))
        elif kind in ("code", "params"):
            c = nbformat.v4.new_code_cell(source.strip("\n"))
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
        else:
            raise ValueError(f"unknown cell kind {kind!r}")
    for i, c in enumerate(nb.cells):  # stable ids keep diffs small
        c["id"] = f"{path.stem[:40]}-{i}"
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _yaml(entry_id: str, name: str) -> str:
    return f"""# yaml-language-server: $schema=../impl/attnzoo/schema/entry.schema.json
id: {entry_id}
title: TODO the paper's title
authors: [TODO Given Family]
venue: arXiv
year: 2024
category: channel-attention
tags: [classification]
links:
  paper: https://arxiv.org/abs/TODO
main_idea: TODO one English sentence in your own words.
bibkey: {name}TODO
status: implemented
implementation:
  attention: [{name}]
notebook: book/notebooks/{entry_id}.ipynb
"""


def _module(entry_id: str, name: str) -> str:
    cls = "".join(p.capitalize() for p in name.split("_"))
    return f'''"""TODO paper title (authors, venue year, arXiv:TODO).

TODO: the idea and its equations in a few lines; where this departs from the paper or the official code, and why.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..registry import register_attention


@register_attention("{name}")
class {cls}(nn.Module):
    """(N, C, H, W) -> (N, C, H, W). TODO describe the arguments."""

    def __init__(self, channels: int):
        super().__init__()
        check_positive_int("channels", channels)
        raise NotImplementedError("{entry_id}: write the module")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
'''


def notebook_cells(entry_id: str, name: str, bibkey: str) -> list[tuple[str, str]]:
    return [
        ("md", f"# TODO mechanism name\n\nTODO the idea in our own words, citing {{cite}}`{bibkey}`."),
        ("md", "## The equations\n\nTODO $y = f(x)$"),
        ("params", PARAMETERS),
        ("code", "import torch\nfrom attnzoo import create_attention\nfrom attnzoo import nbtools\n\n"
                 "dev = nbtools.setup(device, seed)"),
        ("md", "## Shapes"),
        ("code", f'attn = create_attention("{name}", channels).to(dev)\n'
                 "x = torch.randn(batch_size, channels, image_size, image_size + 3, device=dev)\n"
                 "y = attn(x)\nassert y.shape == x.shape, y.shape\nprint(tuple(x.shape), '->', tuple(y.shape))"),
        ("md", "## Parameters, FLOPs and a backward pass"),
        ("code", "print(f'params: {nbtools.count_params(attn):,}')\n"
                 "print(f'MACs: {nbtools.count_macs(attn, x):,}')\n"
                 "print('parameters with gradient:', nbtools.check_backward(attn, x))"),
        ("md", "## What it attends to\n\nTODO plot the module's weights for `nbtools.sample_image(...)`."),
        ("code", "# TODO a figure"),
    ]


def scaffold(root: Path, entry_id: str) -> list[Path]:
    """Create the four files for ``entry_id``; ProblemsError (and nothing written) if any exists already."""
    if not ID_RE.match(entry_id):
        raise ProblemsError([Problem(f"catalogue/{entry_id}.yaml", "id must be lowercase letters, digits and "
                                     "single hyphens", "id")])
    name = entry_id.replace("-", "_")
    bibkey = f"{name}TODO"
    targets = {
        root / "catalogue" / f"{entry_id}.yaml": _yaml(entry_id, name),
        root / "impl" / "attnzoo" / "attention" / f"{name}.py": _module(entry_id, name),
        root / "book" / "notebooks" / f"{entry_id}.ipynb": None,
    }
    problems = [Problem(str(p.relative_to(root)), "already exists; refusing to overwrite") for p in targets if p.exists()]
    bib = root / "references.bib"
    if bib.exists() and f"{{{bibkey}," in bib.read_text(encoding="utf-8"):
        problems.append(Problem("references.bib", f"key {bibkey!r} already exists; refusing to overwrite", "key"))
    if problems:
        raise ProblemsError(problems)
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            write_notebook(path, notebook_cells(entry_id, name, bibkey))
        else:
            path.write_text(text, encoding="utf-8")
    with bib.open("a", encoding="utf-8") as f:
        f.write(f"\n@article{{{bibkey},\n  title   = {{TODO}},\n  author  = {{TODO, Given}},\n"
                f"  journal = {{arXiv preprint arXiv:TODO}},\n  year    = {{2024}}\n}}\n")
    return [*targets, bib]
