"""Code that auth_service, ws_service and the launcher all use."""
