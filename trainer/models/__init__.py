"""Model architectures, one a file, all built from a plain dict (saved beside the weights)."""
from __future__ import annotations

from torch import nn


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model from its saved spec: {"name": ..., "n_classes": ..., ...}."""
    from trainer.models.baselines import ImageOnly, TextOnly
    from trainer.models.cross_attention import CrossAttentionFusion
    from trainer.models.late_fusion import LateFusion
    from trainer.models.unified import UnifiedClassifier

    builders = {"text_only": TextOnly, "image_only": ImageOnly, "late_fusion": LateFusion,
                "cross_attention": CrossAttentionFusion, "unified": UnifiedClassifier}
    if spec.get("name") not in builders:
        raise ValueError(f"Unknown model {spec.get('name')!r}; known: {sorted(builders)}.")
    return builders[spec["name"]](spec)
