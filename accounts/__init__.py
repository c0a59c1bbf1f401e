"""OAuth2 accounts: provider presets, sign-in flows, the encrypted token store, and the
token manager the proxy asks for access tokens (DESIGN: Accounts (OAuth2) and local
logins).

Layout: `providers` (endpoints and scopes per provider), `flows` (blocking OAuth2 calls
through Authlib), `store` (the 0600 token store; refresh tokens encrypted with AES-GCM),
`tokens` (the Trio-side cache: one refresh per expiry shared by all sessions).
"""
