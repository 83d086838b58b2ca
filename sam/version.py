"""The package version, in its own module so that every part of ``sam`` can name it without a cycle."""

__version__ = "0.1.0"
