"""The one exception type that means "the user's input is wrong": the CLI prints it in one line."""


class FclensError(ValueError):
    """Bad input or an unusable model; the message names the problem and what to do about it."""
