"""The simulated marketplace and its sales (demo and test data only)."""
