"""The one door from text to DOT. Everything tgraph writes into a DOT file is emitted by
``dot_quote``: an ``HtmlLabel`` (markup assembled here from ``html_text`` pieces and checked
well-formed) becomes ``<...>``; anything else, an ID, attribute name or value, becomes a
double-quoted string. So no name from a graph file can become an HTML-like label, an
unquoted ID, a port, or break out of its string into raw DOT.

``Digraph`` is graphviz.Digraph with its four quoting hooks bound to ``dot_quote``: the
usual API (node, edge, subgraph, attr) with nothing left to quote by hand.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

import graphviz

from tgraph.sanitize import clean_text

QUOTED_LIMIT = 1000  # characters of a quoted string (a tooltip naming a few long names)


class HtmlLabel(str):
    """Markup of an HTML-like label, made only by ``html_label``."""


def html_text(text) -> str:
    """Text for inside an HTML-like label: cleaned, capped, entity-escaped."""
    # dot expands \G, \N, ... even in HTML labels, entities or not: a word joiner
    # (invisible) after each backslash keeps the text as written; dot rejects <B></B>,
    # so empty text is a no-break space; Graphviz 2.43's lexer fails on a text that is a
    # lone "]" (hypothesis found it): brackets go as entities
    text = (html.escape(clean_text(text), quote=True).replace("\\", "\\&#8288;")
            .replace("]", "&#93;"))
    return text or "&#160;"


def html_label(markup: str) -> HtmlLabel:
    """An HTML-like label from markup whose text parts all went through ``html_text``.
    Checked well-formed, so its ``<``/``>`` balance and it cannot end the label early."""
    try:
        ET.fromstring(f"<L>{markup}</L>")
    except ET.ParseError as e:  # a programming error: raw text reached the markup
        raise ValueError(f"HTML-like label is not well-formed ({e}): {markup[:200]!r}") from None
    return HtmlLabel(markup)


def dot_quote(value) -> str:
    """The DOT token for ``value``: ``<markup>`` for an HtmlLabel, else a quoted string."""
    if isinstance(value, HtmlLabel):
        return f"<{value}>"
    # a backslash never precedes the closing quote (nor escapes a letter: \N, \G...)
    text = clean_text(value, QUOTED_LIMIT).replace("\\", "\\\\\u2060").replace('"', '\\"')
    return f'"{text}"'


def _a_list(label=None, kwargs=None, attributes=None) -> str:
    pairs = [("label", label)] if label is not None else []
    for extra in (kwargs, attributes):
        if extra:
            pairs += list(extra.items() if hasattr(extra, "items") else extra)
    return " ".join(f"{dot_quote(k)}={dot_quote(v)}" for k, v in pairs if v is not None)


def _attr_list(label=None, kwargs=None, attributes=None) -> str:
    content = _a_list(label, kwargs, attributes)
    return f" [{content}]" if content else ""


class Digraph(graphviz.Digraph):
    """graphviz.Digraph whose every ID and attribute goes through ``dot_quote``."""

    _quote = staticmethod(dot_quote)
    _quote_edge = staticmethod(dot_quote)  # tgraph draws no ports: "a:b" is one name
    _a_list = staticmethod(_a_list)
    _attr_list = staticmethod(_attr_list)

    def same_rank(self, rank: str, ids) -> None:
        """``{rank=source; a; b}``: these nodes on one rank."""
        self.body.append("{" + "; ".join([f"rank={dot_quote(rank)}",
                                          *map(dot_quote, ids)]) + "}\n")
