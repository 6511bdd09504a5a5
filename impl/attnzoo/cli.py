"""The ``attnzoo`` command line: check, readme, run, new, book, links."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .paths import project_root
from .problems import ProblemsError


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
    print(f"ok: {len(entries)} catalogue entries ({implemented} implemented), references.bib, registry and notebooks agree")
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

        raise ProblemsError([Problem(f"catalogue/{i}.yaml", "no such entry" if i not in entries else
                                     "entry has no notebook", "notebook") for i in unknown])
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
    from .scaffold import scaffold

    try:
        paths = scaffold(args.root, args.id)
    except ProblemsError as exc:
        _print_problems(exc.problems)
        print("nothing was written", file=sys.stderr)
        return 1
    for p in paths:
        print(f"wrote {p.relative_to(args.root)}")
    print("next: fill in the TODOs, then run `attnzoo check` and `attnzoo run " + args.id + "`")
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
    sub.add_parser("check", help="validate catalogue, references.bib, registry names and notebook paths")
    p = sub.add_parser("readme", help="regenerate the tables between the markers in README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the tables are stale; write nothing")
    p = sub.add_parser("run", help="execute notebooks with papermill into a build folder")
    p.add_argument("ids", nargs="+", help="catalogue ids, or 'all'")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    p.add_argument("--device", help="shorthand for -p device DEVICE (e.g. cuda)")
    p.add_argument("--output-dir", default="build/notebooks", help="where executed copies go (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: %(default)s)")
    p = sub.add_parser("new", help="scaffold YAML, BibTeX stub, module stub and notebook for a new paper")
    p.add_argument("id", help="the new entry's id (lowercase letters, digits, hyphens)")
    p = sub.add_parser("book", help="generate the book's TOC and index pages from the catalogue and build the site")
    p.add_argument("--no-build", action="store_true", help="only generate the TOC and pages")
    p = sub.add_parser("links", help="fetch every catalogue link (maintainers; skipped without network)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        args.root = (args.root or project_root()).resolve()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return {"check": cmd_check, "readme": cmd_readme, "run": cmd_run, "new": cmd_new, "book": cmd_book,
            "links": cmd_links}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
