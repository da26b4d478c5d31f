"""The ranker: fitting, lineage, the one MLflow adapter (registry) and scoring."""
