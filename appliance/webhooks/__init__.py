"""Webhooks: a durable, signed, replayable outbox (issue 6). See docs/webhooks.md."""
