"""The ``attnzoo`` command line: check, readme, run, new, clean, book, links, train, results."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .paths import project_root
from .problems import ProblemsError
from .train.cli import add_results_parser, add_train_parser, cmd_results, cmd_train


def _print_problems(problems) -> None:
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    print(f"{len(problems)} problem(s) found", file=sys.stderr)


def cmd_check(args) -> int:
    from .check import check_project

    entries, problems = check_project(args.root)
    if problems:
        _print_problems(problems)
        return 1
    implemented = sum(1 for e in entries.values() if e.get("status") == "implemented")
    print(f"ok: {len(entries)} catalogue entries ({implemented} implemented), references.bib, the registry, the code "
          "and the notebooks agree")
    return 0


def cmd_readme(args) -> int:
    from .catalogue import load_catalogue
    from .readme import update_readme

    entries, problems = load_catalogue(args.root)
    if problems:
        _print_problems(problems)
        print("README.md not changed: fix the catalogue first", file=sys.stderr)
        return 1
    path = args.root / "README.md"
    try:
        changed = update_readme(path, entries, check=args.check)
    except ProblemsError as exc:
        _print_problems(exc.problems)
        print("README.md not changed", file=sys.stderr)
        return 1
    if args.check:
        if changed:
            print("error: README.md tables are stale: run `attnzoo readme`", file=sys.stderr)
            return 1
        print("ok: README.md tables are up to date")
    else:
        print("README.md tables regenerated" if changed else "README.md tables already up to date")
    return 0


def _select_notebooks(root: Path, ids: list[str]) -> list[tuple[str, Path]]:
    from .catalogue import load_catalogue

    entries, problems = load_catalogue(root)
    with_nb = {i: e for i, e in entries.items() if e.get("notebook")}
    if problems:
        raise ProblemsError(problems)
    if ids == ["all"]:
        ids = sorted(with_nb)
    unknown = [i for i in ids if i not in with_nb]
    if unknown:
        from .problems import Problem
        from .registry import suggest

        raise ProblemsError([Problem(f"catalogue/{i}.yaml", f"no such entry{suggest(i, entries)}" if i not in entries
                                     else "entry has no notebook", "notebook") for i in unknown])
    return [(i, root / with_nb[i].notebook) for i in ids]


def cmd_run(args) -> int:
    from tqdm import tqdm

    from .notebooks import parse_parameters, run_notebook

    try:
        params = parse_parameters(args.param or [])
        selected = _select_notebooks(args.root, args.ids)
    except (ValueError, ProblemsError) as exc:
        _print_problems(getattr(exc, "problems", None) or [exc])
        return 2
    if args.device:
        params["device"] = args.device
    out_dir = Path(args.output_dir).resolve()
    failures = []
    bar = tqdm(selected, unit="notebook", disable=len(selected) < 2, file=sys.stderr)
    for entry_id, source in bar:
        bar.set_postfix_str(entry_id)
        failure = run_notebook(source, out_dir / source.name, params, timeout=args.timeout)
        if failure:
            failures.append(failure)
            tqdm.write(f"FAILED {entry_id}", file=sys.stderr)
    for f in failures:
        print(f"\nerror: {f}", file=sys.stderr)
    print(f"{len(selected) - len(failures)} passed, {len(failures)} failed (executed notebooks in {out_dir})")
    return 1 if failures else 0


def cmd_new(args) -> int:
    from .placeholders import PLACEHOLDER
    from .scaffold import scaffold

    try:
        paths, entry_lines = scaffold(args.root, args.id, args.kind, args.name, args.catalogue_only)
    except ProblemsError as exc:
        _print_problems(exc.problems)
        print("nothing was written", file=sys.stderr)
        return 1
    for p in paths:
        print(f"wrote {p.relative_to(args.root).as_posix()}")
    if entry_lines:
        print(f"\nthen add these lines to catalogue/{args.id}.yaml, in place of its `status:` line:\n")
        print("".join(f"    {line}\n" for line in entry_lines.splitlines()))
    print(f"next: replace every {PLACEHOLDER}, then run `attnzoo check`" + ("" if args.catalogue_only else
          f", `attnzoo run {args.id}` and `python -m pytest tests -k {args.name or args.id.replace('-', '_')}`"))
    return 0


def _notebooks_to_clean(root: Path, ids: list[str]) -> tuple[list[Path], list]:
    """Notebook files for ``ids`` (catalogue ids, notebook file names, or 'all'), and the ids that match none."""
    from .catalogue import load_catalogue
    from .problems import Problem
    from .registry import suggest

    folder = root / "book" / "notebooks"
    available = {p.stem: p for p in sorted(folder.glob("*.ipynb"))}
    if ids == ["all"]:
        return list(available.values()), []
    entries, _ = load_catalogue(root)  # cleaning does not wait for the catalogue to be valid
    listed = {i: root / e.notebook for i, e in entries.items() if isinstance(e.get("notebook"), str)}
    paths, problems = [], []
    for i in ids:
        path = listed.get(i) or available.get(i)
        if path is not None and path.is_file():
            paths.append(path)
        else:
            problems.append(Problem(f"book/notebooks/{i}.ipynb", f"no such notebook{suggest(i, available)}"))
    return paths, problems


def cmd_clean(args) -> int:
    from .notebooks import clean_file
    from .problems import Problem

    paths, problems = _notebooks_to_clean(args.root, args.ids)
    if problems:
        _print_problems(problems)
        print("nothing was cleaned", file=sys.stderr)
        return 1
    for path in paths:
        label = path.relative_to(args.root).as_posix()
        try:
            removed = clean_file(path)
        except ValueError as exc:
            problems.append(Problem(label, f"{exc}; not changed"))
            continue
        print(f"cleaned {label}: removed {'; '.join(removed)}" if removed else f"{label} is already clean")
    if problems:
        _print_problems(problems)
        return 1
    return 0


def cmd_book(args) -> int:
    from .book import build, generate
    from .check import check_project

    entries, problems = check_project(args.root)
    if problems:
        _print_problems(problems)
        print("book not built: fix the problems first", file=sys.stderr)
        return 1
    for p in generate(args.root, entries):
        print(f"generated {p.relative_to(args.root)}")
    return 0 if args.no_build else build(args.root)


def cmd_links(args) -> int:
    from .catalogue import load_catalogue
    from .links import check_links, network_available

    if not network_available():
        print("skipped: no network (the link check needs internet access)")
        return 0
    entries, _ = load_catalogue(args.root)
    problems = check_links(entries, timeout=args.timeout)
    if problems:
        _print_problems(problems)
        return 1
    print(f"ok: every link of {len(entries)} entries answered")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnzoo", description="Attention Zoo: catalogue, notebooks and book.")
    parser.add_argument("--root", type=Path, default=None, help="project checkout (default: found from cwd)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the catalogue, references.bib, the registry, the code and the notebooks "
                   "together; writes nothing")
    p = sub.add_parser("readme", help="regenerate the tables between the markers in README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the tables are stale; write nothing")
    p = sub.add_parser("run", help="execute notebooks with papermill into a build folder")
    p.add_argument("ids", nargs="+", help="catalogue ids, or 'all'")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    p.add_argument("--device", help="shorthand for -p device DEVICE (e.g. cuda)")
    p.add_argument("--output-dir", default="build/notebooks", help="where executed copies go (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: %(default)s)")
    p = sub.add_parser("new", help="scaffold a paper's files: module, notebook and test for a catalogued paper; "
                       "also the YAML entry and a BibTeX stub for a new one; never overwrites")
    p.add_argument("id", help="a catalogued entry's id, or a new one (lowercase letters, digits, hyphens)")
    p.add_argument("--kind", default="attention",
                   help="the registry the paper's module joins: attention, conv, block or model (default: %(default)s)")
    p.add_argument("--name", help="registry and module name (default: the id with '-' -> '_')")
    p.add_argument("--catalogue-only", action="store_true", help="a new id: only the YAML entry and the BibTeX stub")
    p = sub.add_parser("clean", help="strip outputs, execution counts and papermill traces from notebooks in place")
    p.add_argument("ids", nargs="+", help="catalogue ids (or notebook names), or 'all'")
    p = sub.add_parser("book", help="generate the book's TOC and index pages from the catalogue and build the site")
    p.add_argument("--no-build", action="store_true", help="only generate the TOC and pages")
    p = sub.add_parser("links", help="fetch every catalogue link (maintainers; skipped without network)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default: %(default)s)")
    add_train_parser(sub)
    add_results_parser(sub)
    args = parser.parse_args(argv)
    try:
        args.root = (args.root or project_root()).resolve()
    except FileNotFoundError as exc:
        if args.command not in ("train", "results"):   # these two also work outside a checkout
            print(f"error: {exc}", file=sys.stderr)
            return 2
        args.root = None
    return {"check": cmd_check, "readme": cmd_readme, "run": cmd_run, "new": cmd_new, "clean": cmd_clean,
            "book": cmd_book, "links": cmd_links, "train": cmd_train, "results": cmd_results}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
