"""whisperctl's version: a leaf module, so that no module imports the package root (``from . import``) for it."""

__version__ = "0.1.0"
