"""Browser access to the archive: a Starlette app served over HTTPS by Hypercorn on Trio.

`web.app.create_app` builds the ASGI app, `web.server.serve` runs it, and
`web.supervisor.supervise` is what `proxy-admin run` starts when `[web] enabled = true`:
the web side runs in a child process, so a crash there never stops relaying.
"""
