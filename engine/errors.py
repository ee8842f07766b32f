"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """Bad input or a missing resource: the message names the thing and the fix.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    Library callers get an ordinary exception they can catch.
    """
