"""Who is acting: the one caller type of the domain.

The API builds it from the key a request presents (appliance/api/auth.py); the CLI
acts as the oldest admin key through it (appliance/cli/admin.py). Services take it,
never a request, so they answer the same whoever calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.db.models import ApiKey


@dataclass(frozen=True)
class Principal:
    # The whole row, not only id and role: quotas (max_sessions, messages_per_day) are
    # the key's too, and the services enforce them.
    key: ApiKey

    @property
    def is_admin(self) -> bool:
        return self.key.role == "admin"

    def can_see(self, owner_key_id: str | None) -> bool:
        """Admins see everything; a tenant only what its own key owns."""
        return self.is_admin or owner_key_id == self.key.id
