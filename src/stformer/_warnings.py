"""Warnings raised by stformer (tests turn them into errors)."""


class StformerWarning(UserWarning):
    """A suspicious input that stformer can still process."""
