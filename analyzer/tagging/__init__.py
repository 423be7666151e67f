"""The tag stage: ``tag_batch`` (one record batch -> items part + embeddings part), the scoring of vectors
(scoring.py) and the fused float16 kernel it uses (kernel.py)."""
from analyzer.tagging.batch import tag_batch

__all__ = ["tag_batch"]
