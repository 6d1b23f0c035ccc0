"""The operations dashboard (Panel): a data store, views that render it, an API client.

``apps/dashboard.py`` places the views in a template and serves them;
``notebooks/04_operations.ipynb`` shows the same views in JupyterLab.
"""
