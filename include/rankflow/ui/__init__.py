"""Pages: the Ranking page, its charts and HTML helpers, its data sources, the run report."""
