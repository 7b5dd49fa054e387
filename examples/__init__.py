"""Example applications built on the gateway: apps of their own, which import none of the
servers (only the protocol package, as any app may)."""
