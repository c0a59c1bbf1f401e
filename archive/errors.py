"""The archive's one exception root.

Every error the archive package raises on purpose derives from `ArchiveError`, so a
caller (the CLI's error edge, the web layer) can catch the package with one class; the
specific classes (`PackError`, `QueryError`, `UserError`, ...) stay where they are raised
and keep their other bases (`ValueError` for bad input) for the callers that catch those.
Messages are one line for the operator and never carry a secret.
"""


class ArchiveError(Exception):
    """An archive operation failed; the message is one line for the operator."""
