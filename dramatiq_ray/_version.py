"""The package version, in one place (setup.cfg reads it; the package and its webhooks report it)."""

__version__ = "0.2.0.dev0"
