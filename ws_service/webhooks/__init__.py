"""Webhooks: the queue of the domain's events and their signed, retried delivery."""
