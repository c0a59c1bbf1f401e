"""The web package's one exception root.

`WebError` is the base of every error the web layer raises on purpose (the server that
cannot start, a blob whose hash does not match, a refused login step); the CLI's error
edge turns it into one line. Messages never carry a password, a cookie or a token.
"""


class WebError(Exception):
    """The web access cannot do what was asked; one line for the operator."""
