"""One error contract for the library and the CLI.

Every exception whisperctl raises on purpose derives from :class:`WhisperctlError`. Its message names the
input at fault and what to do about it. The CLI prints the message as one line on stderr and exits with
``exit_code``: 2 for usage errors (bad options, caught before any model is loaded), 1 for runtime failures.
"""

from __future__ import annotations


class WhisperctlError(Exception):
    """Base class: a failure whose message tells the user what went wrong and how to fix it."""

    exit_code = 1


class UsageError(WhisperctlError):
    """A bad option or option combination; raised before any model is loaded."""

    exit_code = 2


class EligibilityError(UsageError):
    """An explicitly requested option cannot run on this machine (e.g. flash_attention_2 on a CPU)."""


class ModelError(WhisperctlError):
    """A model cannot be found, verified, converted or loaded."""


class ModelNotFoundError(ModelError):
    """The model is neither local nor in the Hugging Face cache, and the hub cannot be reached."""


class ConversionError(ModelError):
    """A CTranslate2 model file is malformed or uses a layout the converter does not support."""


class OutOfMemoryError(ModelError):
    """The device ran out of memory even at batch size 1."""


class AudioError(WhisperctlError):
    """An input file cannot be read or decoded as audio."""


class OutputError(WhisperctlError):
    """An output file cannot be written (exists without --overwrite, permissions, disk full)."""
