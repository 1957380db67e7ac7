"""Webhooks: a durable, signed, replayable outbox. See docs/webhooks.md."""
