"""The lake: Spark session, Delta tables and partitions, the Delta log, gold lists, the ledger."""
