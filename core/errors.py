"""The product's own exceptions: each ends a command with a one-line reason (scheduler/cli.py).

Anything else that reaches the command line is a bug and is reported with its traceback.
"""


class PipelineError(RuntimeError):
    """A failure an operator can act on; the message says what and where."""


class SettingsError(PipelineError):
    """A setting is missing, of the wrong type or out of range."""


class DataValidationError(PipelineError):
    """Input data does not satisfy the source-table contract."""


class ModelArtifactError(PipelineError):
    """A model version on disk is missing, tampered with or incompatible."""


class UnknownCompressorError(PipelineError):
    """A compressor id has no decoder head / threshold in the model."""


class CalibrationError(PipelineError):
    """Too little held-out normal data to calibrate a compressor soundly."""
