"""The one error type a user can cause. ``cli.py`` turns it into one line and exit status 2."""


class MonaError(Exception):
    """Bad input: a missing or corrupt file, a wrong flag, an impossible combination.

    The message must name what is wrong and where (file, key, flag) in one line.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
