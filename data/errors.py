"""The one error type for data that is not where the config says it is.

It subclasses FileNotFoundError so callers can catch the usual exception, and its message always says
which directory was searched, which files were expected there and how to get them.
"""


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing (and could not be downloaded)."""
