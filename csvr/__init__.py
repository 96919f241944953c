"""csvr: Compressed-domain Spiking Video Recognition."""

__version__ = "0.1.0"
