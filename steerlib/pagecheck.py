"""What a reader must never meet on a built page: checks over the book's HTML.

:func:`page_problems` reads one page of ``_build/html`` and lists, in one line each, a ``{NAME}``
placeholder left in the text (an f-string that was never formatted, a glue key that was never
filled), a ``NaN`` in the text, and a figure (an image in the page's ``<article>``) without a numbered
caption. :func:`colab_links` lists the page's "open in Colab" links, which must point at the
repository named in ``_config.yml``.

Example:
    >>> page_problems('<main><p>gain {NEXT}</p><img src="a.png"></main>')
    ['placeholder {NEXT} in the text', 'a figure without a caption: a.png']
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

__all__ = ["page_problems", "colab_links"]

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?::[^{}]*)?\}")
_NAN = re.compile(r"\b(?:nan|NaN|NAN)\b")
_SKIP = {"script", "style", "code", "pre"}  # code and page machinery are not prose


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.uncaptioned: list[str] = []  # images outside a captioned figure
        self.figures: list[dict[str, Any]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("br", "img", "meta", "link", "input", "hr", "source"):
            if tag == "img":
                (self.figures[-1]["srcs"] if self.figures else self.uncaptioned).append(a.get("src") or "")
            return
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        self.stack.append(tag)
        if tag == "figure":
            self.figures.append({"caption": False, "srcs": []})
        if tag == "figcaption" and self.figures:
            self.figures[-1]["caption"] = True

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            if top == "figure" and self.figures:
                fig = self.figures.pop()
                if not fig["caption"]:
                    self.uncaptioned.extend(fig["srcs"] or ["a <figure> without an image"])
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if not set(self.stack) & _SKIP:
            self.text.append(data)


def page_problems(html: str) -> list[str]:
    """One line per problem a reader would see on this page (see the module docstring)."""
    start, end = html.find("<article"), html.rfind("</article>")
    page = _Page()
    page.feed(html[start:end] if 0 <= start < end else html)  # the page's content, not the theme around it
    text = " ".join(page.text)
    text = re.sub(r"\\\(.*?\\\)|\\\[.*?\\\]|\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)  # LaTeX is not prose
    problems = [f"placeholder {m} in the text" for m in sorted(set(_PLACEHOLDER.findall(text)))]
    problems += [f"'{m}' in the text" for m in sorted(set(_NAN.findall(text)))]
    problems += [f"a figure without a caption: {src}" for src in page.uncaptioned]
    return problems


def colab_links(html: str) -> list[str]:
    """The page's links into Colab."""
    page = _Page()
    page.feed(html)
    return [h for h in page.links if "colab.research.google.com" in h]
