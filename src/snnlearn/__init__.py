"""snnlearn: spike-time and local learning rules for spiking neural networks."""

__version__ = "0.1.0"
