"""The admin package's one exception root.

`AdminError` is the base of the errors admin/ raises on purpose (`ConfigError` in
admin/config_keys.py, `CertError` in admin/tls_certs.py). This module imports nothing, so
admin/config.py (the config model that proxy/ and archive/ may use) stays light.
"""


class AdminError(Exception):
    """An administrative operation failed; one line for the operator, never a secret."""
