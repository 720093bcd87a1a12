"""Exceptions that the command line turns into one message and exit status 2."""


class TorchxError(Exception):
    """Base class: the message is meant for the user as it is."""


class ConfigError(TorchxError, ValueError):
    """The config, a command-line argument or a registered spec is wrong."""


class RegistryError(TorchxError, ValueError):
    """A name was registered twice (a bug in the module that registers it)."""


class NonFiniteLoss(TorchxError):
    """A training loss was NaN or infinite and the wrapper's policy is to stop."""

    def __init__(self, value: float) -> None:
        super().__init__(f"the training loss is {value}")
        self.value = value


class NothingToDo(TorchxError):
    """The command has nothing to do (a finished run resumed as it is): the message, and exit 0."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none), for a one-line
    message that quotes it; cut to `limit` characters."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def short_repr(value: object, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters, saying how long it was."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
