"""Cell and gene embeddings from a pretrained or fine-tuned model."""

from .._lazy import lazy_exports

_EXPORTS = {
    "EmbedConfig": "..settings",
    "embed": ".embeddings",
    "read_embeddings": ".embeddings",
    "write_embeddings": ".embeddings",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
