"""Architecture diagrams: nested scopes, depth, folded repeats, backward and diff views."""

from tgraph.render.api import Rendered, render, render_diff, view_of, with_backward

__all__ = ["Rendered", "render", "render_diff", "view_of", "with_backward"]
