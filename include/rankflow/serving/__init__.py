"""The online side: the item snapshot, the online feature reader and the ranking service."""
