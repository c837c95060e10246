"""In silico perturbation: delete, overexpress, inhibit or activate genes and measure how cells move."""

from .._lazy import lazy_exports

_EXPORTS = {
    "PerturbConfig": "..settings",
    "Perturbation": ".engine",
    "perturb": ".screen",
    "perturb_sequence": ".edits",
    "perturbation_shifts": ".engine",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
