"""Domain errors raised by the core; callers (CLI, HTTP service) map them to messages/codes."""


class ProtonetError(Exception):
    """Base class of every error this project raises on purpose."""


class CheckpointError(ProtonetError):
    """A checkpoint file is missing, corrupt, truncated, or of an unsupported format."""


class InvalidInputError(ProtonetError):
    """An input image or pixel array cannot be turned into a model input."""
