"""Long-running services of the pipeline; each module runs as ``python -m pipeline.<name>``."""
