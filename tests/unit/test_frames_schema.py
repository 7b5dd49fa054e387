"""The frame type lists code switches on and the JSON Schema clients are tested against agree."""

from __future__ import annotations

from realtime_gateway_protocol.frames import CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES, schema


def test_the_type_lists_are_the_schemas_enums() -> None:
    defs = schema()["$defs"]
    assert set(defs["client_frame"]["properties"]["type"]["enum"]) == CLIENT_FRAME_TYPES
    assert set(defs["server_frame"]["properties"]["type"]["enum"]) == SERVER_FRAME_TYPES
    for side, types in (("client", CLIENT_FRAME_TYPES), ("server", SERVER_FRAME_TYPES)):
        assert {f"{side}_{kind}" for kind in types} <= set(defs)
