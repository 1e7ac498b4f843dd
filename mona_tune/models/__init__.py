"""Models: target embedders (1D, 2D), predictors (classification, dense), the timm Swin encoder,
the embedded source model and source data, and the assembly of the target model e → f → h.

Depends on nothing of ``mona_tune.train``; tasks are known only through shapes.
"""

from mona_tune.models.assemble import TargetModel, build_target_model, embedder_spec, pool
from mona_tune.models.embedders import Embedder1D, Embedder2D
from mona_tune.models.encoder import SwinBody, create_timm_swin, load_weights
from mona_tune.models.predictors import ClassificationHead, DenseHead
from mona_tune.models.load import load_source_model
from mona_tune.models.source import SourceData, SourceModel, load_source_data

__all__ = [
    "ClassificationHead", "DenseHead", "Embedder1D", "Embedder2D", "SourceData", "SourceModel",
    "SwinBody", "TargetModel", "build_target_model", "create_timm_swin", "embedder_spec",
    "load_source_data", "load_source_model", "load_weights", "pool",
]
