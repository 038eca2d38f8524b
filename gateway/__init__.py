"""Identity-aware gateway for ML inference endpoints."""

__version__ = "0.1.0"
