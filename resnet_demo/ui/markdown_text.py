"""Text from users (class names from an uploaded checkpoint) placed inside Markdown, shown as typed.

``gr.Markdown`` renders Markdown and (sanitised) HTML, so a class named ``<img src=x>`` or
``**bold**`` would otherwise become an image or bold text. :func:`md_text` makes such text
literal; everything the app writes itself stays Markdown.
"""

from __future__ import annotations

import html
import re

__all__ = ["md_text"]

# Every ASCII punctuation mark that means something to Markdown (CommonMark lets any of them
# be escaped with a backslash); '<', '>' and '&' become entities first, which covers raw HTML.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:$=\"'])")
_WHITESPACE = re.compile(r"\s+")


def md_text(text: str) -> str:
    """``text`` as literal Markdown: no HTML, no emphasis, no links, no headings, one line."""
    one_line = _WHITESPACE.sub(" ", str(text)).strip()
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))
