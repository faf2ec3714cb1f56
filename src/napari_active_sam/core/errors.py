"""Exceptions a user can cause; each message says what to do about it."""


class ActiveSamError(Exception):
    """Base class of every error napari-active-sam raises on purpose."""


class ModelError(ActiveSamError):
    """A model name, architecture or device that cannot be used."""


class ModelNotAvailableError(ModelError):
    """A registered model whose weights are not published yet."""


class CheckpointError(ModelError):
    """A checkpoint file that is missing, corrupt or for another architecture."""


class DownloadError(ModelError):
    """A download that failed or whose hash did not match."""


class ImageError(ActiveSamError):
    """An image that cannot be turned into SAM input (shape, dtype, content)."""


class PromptError(ActiveSamError):
    """Prompts that do not fit the image (outside it, wrong shape)."""


class EmbeddingStoreError(ActiveSamError):
    """An embedding store that belongs to another model or cannot be opened."""


class AnnotationFileError(ActiveSamError):
    """A saved annotation that is missing, damaged or for another image."""


class SaveError(ActiveSamError):
    """A result that could not be written where asked (it is kept in the fallback place the
    message names)."""
