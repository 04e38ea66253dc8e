"""The cluster example: dramatiq workers attached to an existing Ray cluster by address, with a runtime_env."""
