"""Image classifiers used by the SAM reproduction (plain ``nn.Module``s) and their registry.

``create_model(name, num_classes, in_chans=3, **kw)`` builds one; ``list_models()`` names them.
"""

from models.registry import create_model, list_models, model_kwargs

__all__ = ["create_model", "list_models", "model_kwargs"]
