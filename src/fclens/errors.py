"""The one exception type that means "the user's input is wrong": the CLI prints it in one line."""


class FclensError(ValueError):
    """Bad input or an unusable model; the message names the problem and what to do about it."""


def first_line(error: BaseException) -> str:
    """An exception as one line of text (its message with white space folded, else its type's name)."""
    return " ".join(str(error).split()) or type(error).__name__
