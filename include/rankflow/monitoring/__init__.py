"""Monitoring: rules and thresholds, the nightly measures and their history."""
