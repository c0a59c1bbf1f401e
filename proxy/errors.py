"""One exception root for the proxy; converted to replies or log lines only at the edge.

`RemoteProtocolError`: the peer broke the protocol (the client or the upstream).
`LocalProtocolError`: we were asked to do something the protocol forbids (a bug).
`UpstreamError`: the provider cannot be used (unreachable, TLS failure, hostile reply).
Messages are for operators' logs; they never contain secrets and are never sent to a peer.
"""


class ProxyError(Exception):
    """Root of every error the proxy raises on purpose."""


class ProtocolError(ProxyError):
    pass


class RemoteProtocolError(ProtocolError):
    pass


class LocalProtocolError(ProtocolError):
    pass


class UpstreamError(ProxyError):
    pass
