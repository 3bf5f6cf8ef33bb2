"""The one family of errors a user can cause. The CLI prints them in one line."""


class TGraphError(Exception):
    """A problem with a graph, a feed, a weights file or an op the user supplied."""


class ShapeError(TGraphError):
    """An op was given inputs whose types its shape rule rejects."""


class GraphFileError(TGraphError):
    """A graph or weights file that cannot be read."""


class AttrError(TGraphError):
    """A node's attrs do not fit its op's schema (names and kinds)."""


class FeedError(TGraphError):
    """A feed or parameter array that does not fit the graph."""


class UnknownOpError(TGraphError):
    """An op name the registry does not know."""


class NoGradientError(TGraphError):
    """A gradient must flow through an op that has no VJP rule."""


class BackendError(TGraphError):
    """A backend that cannot be used on this machine."""


class LoweringError(TGraphError):
    """A graph that cannot be handed to another engine (JAX): an op without a rule there."""
