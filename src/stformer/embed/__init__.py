"""Cell and gene embeddings from a pretrained or fine-tuned model."""

from .embeddings import embed, write_embeddings

__all__ = ["embed", "write_embeddings"]
