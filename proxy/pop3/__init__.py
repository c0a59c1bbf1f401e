"""The POP3 side of mailtee: a sans-IO relay core (no sockets, no Trio, no TLS objects).

`Pop3Relay(settings)` implements `proxy.actions.RelayCore`; `proxy.session` drives it.
"""

from proxy.pop3.relay import Pop3Relay

__all__ = ["Pop3Relay"]
