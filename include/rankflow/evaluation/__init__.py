"""Offline evaluation: metrics, propensities, baselines, the promotion gate, list figures."""
