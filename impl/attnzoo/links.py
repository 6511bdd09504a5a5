"""``attnzoo links``: an optional link checker for maintainers; skipped (exit 0) when there is no network."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .catalogue import Entry
from .problems import Problem


def network_available(host: str = "arxiv.org", timeout: float = 3.0) -> bool:
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _status(url: str, timeout: float) -> int | str:
    headers = {"User-Agent": "attnzoo-link-check/1.0"}
    for method in ("HEAD", "GET"):  # some hosts refuse HEAD
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers),
                                        timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            if method == "GET" or exc.code not in (403, 405, 501):
                return exc.code
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))
    return "unreachable"


def check_links(entries: dict[str, Entry], timeout: float = 15.0, workers: int = 8) -> list[Problem]:
    """Every link of every entry, fetched; a problem for each that does not answer 2xx/3xx."""
    targets = [(e, field, url) for e in entries.values() for field, url in (e.get("links") or {}).items()]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda t: _status(t[2], timeout), targets))
    return [Problem(f"catalogue/{e.path.name}", f"{url} answered {status}", f"links.{field}", e.lines.get(("links", field)))
            for (e, field, url), status in zip(targets, results) if not (isinstance(status, int) and status < 400)]
