"""attnlab's user-facing errors: one line that says what is wrong and how to fix it."""


class AttnlabError(Exception):
    """Bad input from the user; the CLI prints the message alone and exits with code 2."""


class CheckpointError(AttnlabError):
    """A checkpoint that cannot be read, is unsafe, or does not fit its architecture."""


class ModelNameError(AttnlabError):
    """A model name neither attnlab nor timm knows."""


def one_line(text: object) -> str:
    """An error message on one line, whatever an underlying exception says."""
    return " ".join(str(text).split())
