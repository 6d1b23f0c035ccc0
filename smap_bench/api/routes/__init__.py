"""One router per resource; :mod:`smap_bench.api.main` includes them under ``/api``."""
