"""The project's error types. Every user mistake raises a subclass of :class:`MfifError` whose
message names the values involved and what to do."""


class MfifError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(MfifError, ValueError):
    """Bad input data: shapes, dtypes, sizes, NaN, empty arrays, mismatched frames."""


class ModelFileError(MfifError):
    """A model, checkpoint or engine file that is missing, corrupted or of the wrong kind."""


class DataError(MfifError):
    """A data folder or video that is missing, empty, or holds unreadable files."""


class ConfigError(MfifError, ValueError):
    """An option or configuration value that is out of range or unknown."""


class BackendUnavailableError(MfifError, ImportError):
    """An optional package (an extra) or a device that the chosen backend needs is missing."""


class SourceError(MfifError):
    """A video or camera source that cannot be opened, yields nothing, or disconnected."""


class RigError(ConfigError):
    """A rig file (alignment transforms) that is missing, malformed, of an unknown version, or made
    for other sources or another frame size than the frames given."""


class InferenceError(MfifError, RuntimeError):
    """A backend failed to run the model on given inputs, or produced non-finite values."""


class CudaError(MfifError, RuntimeError):
    """A CUDA runtime call that failed (out of memory, invalid value, a lost device)."""


class EngineMismatchError(ModelFileError):
    """An engine built for another TensorRT version, GPU, model file or profile."""


class EngineBuildError(MfifError):
    """TensorRT could not parse the ONNX file or build an engine from it."""
