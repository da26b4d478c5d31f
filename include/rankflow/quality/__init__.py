"""What valid data is: the raw-drop contract, the expectation suites and the gate engine."""
