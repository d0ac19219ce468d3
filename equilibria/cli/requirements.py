"""The optional packages a command needs, checked before any work starts."""

from __future__ import annotations

from ..extras import require_installed

TRAIN_PACKAGES = {
    "tqdm": "progress bars",
    "matplotlib": "the plots of a run",
    "sklearn": "the digits data set",
}


def check_packages(packages: dict[str, str] = TRAIN_PACKAGES, *, digits: bool = True) -> None:
    """Raise MissingExtraError (naming `pip install "equilibria[train]"`) for the first missing,
    without importing any; scikit-learn only when the run reads the digits (`digits`)."""
    for module, purpose in packages.items():
        if module != "sklearn" or digits:
            require_installed(module, f"equilibria's command line ({purpose})")
