"""Where the project's files live, found from the current directory (or ATTNZOO_ROOT)."""
from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) holding both catalogue/ and references.bib."""
    env = os.environ.get("ATTNZOO_ROOT")
    if env and start is None:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "catalogue").is_dir() and (d / "references.bib").is_file():
            return d
    source_checkout = Path(__file__).resolve().parents[2]
    if (source_checkout / "catalogue").is_dir():
        return source_checkout
    raise FileNotFoundError(f"no Attention Zoo checkout (catalogue/ and references.bib) at or above {here}")


SCHEMA = Path(__file__).with_name("schema") / "entry.schema.json"
