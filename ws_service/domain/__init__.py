"""The gateway's rules, free of aiohttp: sockets' state machine, verification, channels, fan-out."""
