"""Typed application state of auth_service."""

from __future__ import annotations

from aiohttp import web

from auth_service.domain.keyring import KeyRing
from auth_service.domain.outbox import EventPublisher
from auth_service.domain.service import AuthService
from auth_service.domain.store import Store
from auth_service.metrics import Metrics
from auth_service.provider_keys import ProviderKeys
from auth_service.settings import Settings
from shared.bus import EventBus

__all__ = [
    "BUS",
    "KEYRING",
    "METRICS",
    "PROVIDER_KEYS",
    "PUBLISHER",
    "SERVICE",
    "SETTINGS",
    "STORE",
]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Store)
BUS = web.AppKey("bus", EventBus)
KEYRING = web.AppKey("keyring", KeyRing)
SERVICE = web.AppKey("service", AuthService)
PUBLISHER = web.AppKey("publisher", EventPublisher)
PROVIDER_KEYS = web.AppKey("provider_keys", ProviderKeys)
