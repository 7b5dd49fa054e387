"""The contract between the realtime gateway's servers and its clients, standard library only.

One module per idea: ``access_token`` (the access-token type and claims), ``close_codes`` (every
close and what a client must do next), ``wire_json`` (the strict JSON codec every frame and body
goes through), ``frames`` (the frame types and the JSON Schema), ``tickets`` (WebSocket tickets),
``events`` and ``key_events`` (what auth_service announces to every gateway), ``backoff`` (reconnect
delays) and ``tasks`` (stopping asyncio tasks without swallowing the caller's cancellation).
"""

__version__ = "0.2.0"
