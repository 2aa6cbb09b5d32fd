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


def plural(n: int, word: str) -> str:
    """'1 image', '2 images': counts in messages read as sentences."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
