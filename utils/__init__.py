"""Shared building blocks of labelrep's scripts: label spaces, training, attacks and run files."""
__version__ = "0.1.0"
