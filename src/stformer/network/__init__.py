"""Gene networks from a model's attention (``stformer network``), per cell state and between states.

``build.py`` is the front end (cells, genes, passes, outputs); ``attention.py`` computes the
attention probabilities and sums them by gene identity; ``statistics.py`` holds the differential
permutation test, the co-expression baseline and the overlap of the two; ``plots.py`` draws
``network.png``.
"""

from ..settings import NetworkConfig
from .build import network

__all__ = ["NetworkConfig", "network"]
