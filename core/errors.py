"""Exceptions that end a command with a one-line reason."""


class PipelineError(RuntimeError):
    """A failure an operator can act on; the message says what and where."""


class DataValidationError(PipelineError):
    """Input data does not satisfy the source-table contract."""


class ModelArtifactError(PipelineError):
    """A model version on disk is missing, tampered with or incompatible."""


class UnknownCompressorError(PipelineError):
    """A compressor id has no decoder head / threshold in the model."""


class CalibrationError(PipelineError):
    """Too little held-out normal data to calibrate a compressor soundly."""
