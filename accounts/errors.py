"""The accounts package's one exception root.

`AccountError` is the base of every error the OAuth2 side raises on purpose (provider
presets, sign-in flows, the token store, the token manager), so the CLI's error edge and
the proxy can catch the package with one class. Messages never carry a token, a client
secret or a password.
"""


class AccountError(Exception):
    """An OAuth2 account operation failed; one line for the operator, never a secret."""
