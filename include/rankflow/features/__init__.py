"""Feature definitions: the registry of model inputs, batch and on-demand features."""
