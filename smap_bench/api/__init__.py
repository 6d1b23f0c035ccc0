"""The operations API (FastAPI): fleet, series, anomaly events and alarms, replay control
and pipeline health, under ``/api``. Build it with :func:`smap_bench.api.main.create_app`;
``python -m pipeline.api`` serves it."""
