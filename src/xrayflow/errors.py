"""Exceptions that the CLI turns into a one-line message and a non-zero exit."""


class XrayflowError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(XrayflowError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


class DataError(XrayflowError):
    """An input file is missing, truncated, corrupt or inconsistent with the configuration."""


class PhysicsError(XrayflowError):
    """A request the physics cannot honour (undersampled propagator, probe larger than grid)."""
