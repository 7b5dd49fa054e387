"""Notes: a small app backend with its own users, documents and sharing, wired to the realtime
gateway the way docs/protocol.md describes (README, "Use it from your app"; this folder's
README.md)."""
