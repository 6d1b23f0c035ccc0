"""smap-bench: real-time anomaly detection on NASA SMAP telemetry, as a real pipeline."""

__version__ = "0.1.0"
