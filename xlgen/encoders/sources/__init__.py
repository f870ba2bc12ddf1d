"""Label sources of the retriever, chosen by name: one module each behind :class:`LabelSource`."""

from xlgen.encoders.sources.base import LabelSource, TrainData
from xlgen.encoders.sources.knn import KnnSource
from xlgen.encoders.sources.label_text import LabelTextSource
from xlgen.encoders.sources.linear import LinearSource

SOURCES: dict[str, type[LabelSource]] = {s.name: s for s in (KnnSource, LabelTextSource, LinearSource)}

__all__ = ["SOURCES", "KnnSource", "LabelSource", "LabelTextSource", "LinearSource", "TrainData"]
