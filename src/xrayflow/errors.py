"""Exceptions that the CLI turns into a one-line message and exit status 2.

Every failure a user can cause (a bad config value, a bad or unreadable file, an output
that would destroy an input, a run that would not fit in memory) is one of these, so the
CLI prints ``xrayflow <stage>: error: <message>`` and never a traceback.
"""


class XrayflowError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(XrayflowError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


class DataError(XrayflowError):
    """An input file is missing, truncated, corrupt or inconsistent with the configuration."""


class PhysicsError(XrayflowError):
    """A request the physics cannot honour (undersampled propagator, probe larger than grid)."""


class OutputError(XrayflowError):
    """An output path that cannot be written safely (it is an input, a directory, a device,
    in a missing or read-only directory); found before any computation starts."""


class ResourceError(XrayflowError):
    """The run would need more memory than is available (or than ``max_memory_gb`` allows);
    the message gives the estimate, what it is made of, and the limit."""
