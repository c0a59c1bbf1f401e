"""Pull archiving: copy mail from IMAP/POP3 mailboxes into the archive (docs/mailboxes.md).

Modules: runner (the `pull` entry point), imap and pop3 (one mailbox each), state
(high-water marks, crash recovery), writer (the spool), multidrop (owners from headers),
delete (`delete_after_days`), csv_import (`mailbox import-csv`), schedule (`run`).
"""
