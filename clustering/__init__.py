"""Label clustering: label features (TF-IDF PIFA or encoder states) -> seeded K-means -> the
:class:`xlgen.guidance.clusters.LabelClusters` artifact that a ``bcl`` / ``mcg`` model directory carries."""

from xlgen.clustering.kmeans import ClusterConfig, assign_new_labels, build_clusters, default_n_clusters

__all__ = ["ClusterConfig", "assign_new_labels", "build_clusters", "default_n_clusters"]
