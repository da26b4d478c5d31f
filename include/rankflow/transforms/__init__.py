"""Pure DataFrame -> DataFrame steps: bronze parsing, candidates, the training set."""
