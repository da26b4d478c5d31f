"""One module per DAG task: task X = ``jobs/X.py`` = ``rankflow/steps/X.py``."""
