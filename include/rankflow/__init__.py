"""rankflow: batch learning-to-rank for online marketplaces (library; never imports Airflow)."""

__version__ = "0.1.0"
