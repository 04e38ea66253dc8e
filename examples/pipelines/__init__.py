"""The pipelines example: a pipeline and a group whose steps pass large results by pointer."""
