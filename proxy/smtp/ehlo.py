"""EHLO capability rewriting (DESIGN "Listeners": what passes and what the proxy owns).

The proxy relays the upstream's EHLO reply except for extensions it must own:
- STARTTLS belongs to the client-facing side: removed, and offered again only when this
  listener does client STARTTLS and the client is not on TLS yet (RFC 3207).
- AUTH is removed when the proxy injects its own credentials upstream, and hidden on a
  STARTTLS listener until TLS is up (passwords never cross in plaintext).
- CHUNKING/BINARYMIME: BDAT is not relayed (its chunks would bypass DATA capture).
- BURL (RFC 4468): the provider would fetch the message from an IMAP URL -- bytes the
  proxy never sees -- so it is not offered and the command is refused.
- XCLIENT/XFORWARD (Postfix): a client must not set its own provenance (address, name,
  login) at the provider; the provider trusts the proxy's address, not the client's word.
- SIZE is lowered to the proxy's own limit when the upstream's is larger or unlimited.
Everything else (PIPELINING, 8BITMIME, SMTPUTF8, DSN, ENHANCEDSTATUSCODES, ...) passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.smtp.replies import Reply, build_reply

_DROP_ALWAYS = {b"STARTTLS", b"CHUNKING", b"BINARYMIME", b"BURL", b"XCLIENT", b"XFORWARD"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    keywords: frozenset[bytes]
    auth_mechanisms: frozenset[bytes]

    @classmethod
    def from_reply(cls, reply: Reply) -> Capabilities:
        keywords: set[bytes] = set()
        mechs: set[bytes] = set()
        for line in reply.lines[1:]:
            words = line.upper().replace(b"=", b" ", 1).split()
            if not words:
                continue
            keywords.add(words[0])
            if words[0] == b"AUTH":
                mechs.update(words[1:])
        return cls(frozenset(keywords), frozenset(mechs))


def rewrite_ehlo(reply: Reply, *, offer_starttls: bool, offer_auth: bool, max_size: int) -> bytes:
    """The EHLO reply the client sees; non-250 replies pass unchanged."""
    if reply.code != 250:
        return reply.raw
    lines = [reply.lines[0]]
    for line in reply.lines[1:]:
        words = line.split()
        keyword = words[0].upper().split(b"=", 1)[0] if words else b""
        if keyword in _DROP_ALWAYS or (keyword == b"AUTH" and not offer_auth):
            continue
        if keyword == b"SIZE":
            limit = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            if limit == 0 or limit > max_size:
                line = b"SIZE " + str(max_size).encode()
        lines.append(line)
    if offer_starttls:
        lines.append(b"STARTTLS")
    return build_reply(250, lines)
