"""What the notifier knows of notification preferences without asking MongoDB on every event: each user's, and
which opt-in event types anyone enabled, both kept ``notification_preferences_cache_s`` (5 s by default)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from engineroom.core.config import Settings
from engineroom.models.notification import NotifiableEvent, NotificationPreferences
from engineroom.store.preferences import PreferenceStore

#: The event types someone who never set preferences is notified of. Always wanted: such a user may turn up at any
#: moment, and counting them would cost a read per event.
DEFAULT_TYPES = frozenset(str(kind) for kind in NotifiableEvent if NotificationPreferences().channels_for(kind))
#: The other notifiable types (``job.started``): wanted only while some stored preference enables one.
OPT_IN_TYPES = frozenset(str(kind) for kind in NotifiableEvent) - DEFAULT_TYPES


class PreferenceCache:
    """Preferences as the notifier reads them: each at most ``ttl_s`` old, for at most ``max_users`` users (the
    least recently used are dropped first), plus which opt-in types any stored preference enables.

    A ``PUT /notifications/preferences`` answered by another process is seen within ``ttl_s``: an entry expires
    ``ttl_s`` after its read was sent, and a read sent after the ``PUT`` returned sees it. One answered by this
    process is seen at once, since the route calls ``forget``. Used from one event loop only, so it takes no lock.
    """

    def __init__(
        self,
        store: PreferenceStore,
        *,
        ttl_s: float,
        max_users: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_users = max_users
        self.clock = clock
        #: (tenant, user) → (expires at, preferences), least recently used first.
        self._users: OrderedDict[tuple[str, str], tuple[float, NotificationPreferences]] = OrderedDict()
        #: (expires at, the opt-in types some stored preference enables), or nothing known.
        self._opt_ins: tuple[float, frozenset[str]] | None = None
        #: Bumped by ``forget``: a read sent before it may predate the change, so its answer is used but not kept.
        self._generation = 0

    @classmethod
    def from_settings(cls, store: PreferenceStore, settings: Settings) -> PreferenceCache:
        return cls(
            store,
            ttl_s=settings.notification_preferences_cache_s,
            max_users=settings.notification_preferences_cache_users,
        )

    async def may_want(self, event_type: str) -> bool:
        """False if nobody can want a notification of this type now, so the event may be dropped unread: no user's
        defaults include it and no stored preference enables it. Reads MongoDB at most once per ``ttl_s``, and never
        for a type the defaults include.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        if event_type in DEFAULT_TYPES:
            return True
        if event_type not in OPT_IN_TYPES:
            return False
        sent_at = self.clock()
        if self._opt_ins is not None and sent_at < self._opt_ins[0]:
            return event_type in self._opt_ins[1]
        generation = self._generation
        enabled = await self.store.enabled_types(OPT_IN_TYPES)
        if generation == self._generation:
            self._opt_ins = (sent_at + self.ttl_s, enabled)
        return event_type in enabled

    async def get(self, tenant_id: str, user_id: str) -> NotificationPreferences:
        """The user's preferences (the defaults if never set), read at most once per ``ttl_s``.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        key = (tenant_id, user_id)
        sent_at = self.clock()
        cached = self._users.get(key)
        if cached is not None and sent_at < cached[0]:
            self._users.move_to_end(key)
            return cached[1]
        generation = self._generation
        preferences = await self.store.get(tenant_id, user_id)
        if generation == self._generation:
            self._users[key] = (sent_at + self.ttl_s, preferences)
            self._users.move_to_end(key)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        return preferences

    def forget(self, tenant_id: str, user_id: str) -> None:
        """Drop the user's preferences and the opt-in types: the gateway calls this once a ``PUT`` is stored, so
        this process's notifier reads both again on the next event that needs them."""
        self._users.pop((tenant_id, user_id), None)
        self._opt_ins = None
        self._generation += 1
