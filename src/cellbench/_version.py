"""The installed version (from package metadata, so pyproject.toml is the only source)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cellbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
