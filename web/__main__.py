"""`python -m web ARGS...` is `proxy-admin ARGS...` (the service starts its web child so,
`... --config PATH web serve`, without depending on where proxy-admin is installed)."""

import sys

from admin.cli import app

app(prog_name="proxy-admin", args=sys.argv[1:])
