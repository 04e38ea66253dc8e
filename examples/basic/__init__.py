"""The basic example: Redis, ``dramatiq`` CLI workers, a local Ray, large results spilled to disk."""
