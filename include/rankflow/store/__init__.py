"""The Redis contract: keys, encoding, versioned writer, version switch, reader, client."""
