"""Comparing pooling modes: shrinkage between pooled, unpooled and hierarchical fits."""

from carpool.compare.shrinkage import shrinkage_table

__all__ = ["shrinkage_table"]
