"""Multi-focus image fusion toolkit: shared core (errors, image I/O, the ``mfif`` command)."""

__version__ = "0.1.0"
