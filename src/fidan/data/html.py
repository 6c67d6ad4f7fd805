"""HTML to main text, for web archives.

trafilatura (a maintained extractor that drops navigation, footers and comments) is used when it
is installed; otherwise a small fallback keeps the text of block elements and skips scripts,
styles, navigation, headers, footers and forms. The fallback keeps more boilerplate, which the
C4 line rules then remove.
"""
from __future__ import annotations

from html.parser import HTMLParser

SKIP = {"script", "style", "nav", "header", "footer", "form", "noscript", "aside", "svg", "template"}
BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "blockquote", "pre"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIP:
            self.skip += 1
        elif tag in BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIP and self.skip:
            self.skip -= 1
        elif tag in BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def fallback_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    lines = (" ".join(line.split()) for line in "".join(parser.out).split("\n"))
    return "\n".join(line for line in lines if line)


def html_to_text(payload: bytes) -> str:
    html = payload.decode("utf-8", errors="replace")
    try:
        import trafilatura
    except ImportError:
        return fallback_text(html)
    text = trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True)
    return text if text else fallback_text(html)
