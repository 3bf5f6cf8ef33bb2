"""Model builders (filled by the models work): MODELS and build_model."""

MODELS: dict = {}


def build_model(name, preset=None, loss=False, **overrides):
    raise NotImplementedError
