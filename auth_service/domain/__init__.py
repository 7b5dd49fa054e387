"""Domain logic of the token issuer: no aiohttp, no SQL."""
