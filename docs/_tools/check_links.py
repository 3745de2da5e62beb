"""Check that every internal link of a built HTML site leads somewhere.

    python docs/_tools/check_links.py docs/_build/html

For each ``href`` and ``src`` of each page that is not external (``http:``,
``https:``, ``mailto:``): the file it names must exist, and a ``#fragment``
must be an ``id`` in that file. Exits 1 and lists the broken ones, else 0.
Sphinx's ``-n`` checks cross-references; this catches what it does not
(Markdown links to headings, images, links typed into a page).
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit

EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:")


class _Page(HTMLParser):
    """The ids and the links of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: Set[str] = set()
        self.links: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src") and not value.startswith(EXTERNAL):
                self.links.append(value)


def broken_links(root: Path) -> List[str]:
    """Every internal link under ``root`` whose file or fragment is missing."""
    pages: Dict[Path, _Page] = {}
    for path in sorted(root.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            target, fragment = parts.path, parts.fragment
            resolved = (path.parent / unquote(target)).resolve() if target else path
            if resolved.is_dir():
                resolved = resolved / "index.html"
            if not resolved.exists():
                broken.append(f"{path.relative_to(root.resolve())}: {link} (no such file)")
            elif fragment and resolved.suffix == ".html" and unquote(fragment) not in pages[resolved].ids:
                broken.append(f"{path.relative_to(root.resolve())}: {link} (no such anchor)")
    return broken


def main(argv: List[str]) -> int:
    """Check the site at ``argv[0]``; 1 if any link is broken."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    broken = broken_links(root)
    for line in broken:
        print(line)
    pages = len(list(root.rglob("*.html")))
    print(f"{len(broken)} broken internal links in {pages} pages", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
