"""Markdown tables of the catalogue: the README's awesome list and the book's index pages."""
from __future__ import annotations

import html

from .catalogue import Entry, categories, category_title

START = "<!-- attnzoo:tables:start -->"
END = "<!-- attnzoo:tables:end -->"


def cell(text: str) -> str:
    """Make text safe inside a Markdown table cell: one line, HTML escaped, pipes escaped."""
    text = " ".join(str(text).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def _link_text(text: str) -> str:
    return cell(text).replace("[", "\\[").replace("]", "\\]")


def sort_key(e: Entry) -> tuple:
    return (-int(e.get("year", 0)), str(e.get("title", "")).lower())


def anchor(category: str) -> str:
    """The GitHub/MyST slug of the category's heading."""
    return category_title(category).lower().replace(" ", "-")


def notebook_cell(e: Entry, notebook_link) -> str:
    status = e.get("status")
    if status == "implemented" and e.get("notebook"):
        return f"✅ [notebook]({notebook_link(e)})"
    return "🚧 planned" if status == "planned" else ""


def category_table(items: list[Entry], notebook_link) -> list[str]:
    rows = ["| Paper | Venue | Code | Main idea | Notebook |", "| --- | --- | --- | --- | --- |"]
    for e in sorted(items, key=sort_key):
        links = e.get("links") or {}
        code = f"[code]({links['code']})" if links.get("code") else "—"
        rows.append(f"| [{_link_text(e.title)}]({links.get('paper', '')}) | {cell(e.venue)} {e.year} | {code} | "
                    f"{cell(e.main_idea)} | {notebook_cell(e, notebook_link)} |")
    return rows


def timm_table(entries: dict[str, Entry], notebook_link) -> list[str]:
    """Our models with a timm twin (the ``timm=`` of their registration): the same architecture, so
    ``load_timm_weights`` / ``create_model(name, pretrained=True)`` give timm's logits."""
    from .timm import list_timm_twins

    paper = {name: e for e in entries.values() for name in (e.get("implementation") or {}).get("models", [])}
    rows = ["| Model | timm model | Paper |", "| --- | --- | --- |"]
    for name, twin in sorted(list_timm_twins().items()):
        e = paper.get(name)
        title = f"[{_link_text(e.title)}]({notebook_link(e)})" if e is not None and e.get("notebook") else "—"
        rows.append(f"| `{name}` | `{twin}` | {title} |")
    return rows


def catalogue_markdown(entries: dict[str, Entry], notebook_link, heading: str = "###") -> str:
    """Contents list first, then one table per category (in the vocabulary's order), then the timm twins."""
    by_cat = {c: [e for e in entries.values() if e.get("category") == c] for c in categories()}
    implemented = sum(1 for e in entries.values() if e.get("status") == "implemented")
    lines = [f"{len(entries)} papers, {implemented} with code and an executed notebook here "
             "(✅ notebook; 🚧 planned: implemented by the seed collections, not yet here).", "",
             "**Contents**", ""]
    lines += [f"- [{category_title(c)}](#{anchor(c)}) ({len(items)})" for c, items in by_cat.items() if items]
    lines += ["- [Weights from timm](#weights-from-timm)"]
    for c, items in by_cat.items():
        if items:
            lines += ["", f"{heading} {category_title(c)}", "", *category_table(items, notebook_link)]
    lines += ["", f"{heading} Weights from timm", "",
              "These models have the architecture of a timm model: `load_timm_weights(model, timm_model)` and "
              "`create_model(name, pretrained=True)` load its weights, and a test checks that the logits are "
              "timm's.", "", *timm_table(entries, notebook_link)]
    return "\n".join(lines) + "\n"
