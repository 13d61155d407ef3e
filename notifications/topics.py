"""WebSocket topics: what a socket asked to hear, and which events that covers.

A topic is parsed once, at ``subscribe``; from then on matching an event is a few comparisons. Access to a
topic (is this job yours?) is checked by the gateway before a topic is accepted; matching still checks the
tenant, so a topic can never carry another tenant's event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engineroom.core.config import ENGINES
from engineroom.models.event import Event, EventType
from engineroom.models.principal import Principal

TopicKind = Literal["mine", "notifications", "tenant", "job", "workflow", "queue"]

#: Every engine's queue events.
ALL_QUEUES = "*"
#: Topics a socket starts with: a user's own events; admins also hear the engines' queue events.
DEFAULT_TOPICS = ("mine",)
ADMIN_DEFAULT_TOPICS = ("mine", f"queue:{ALL_QUEUES}")
TOPIC_FORMS = "mine, notifications, tenant, job:<id>, workflow:<id> or queue:<engine>"
#: Topics one socket may hold at once.
MAX_TOPICS = 200


class InvalidTopic(ValueError):
    """A topic string that names nothing we publish."""


@dataclass(frozen=True)
class Topic:
    kind: TopicKind
    #: The job, workflow or engine the topic names; empty for ``mine`` and ``notifications``.
    target: str = ""

    @classmethod
    def parse(cls, text: object) -> Topic:
        """``mine``, ``notifications``, ``tenant`` (admins: every job event of their tenant), ``job:<id>``,
        ``workflow:<id>`` or ``queue:<engine>`` (``queue:*``)."""
        if not isinstance(text, str):
            raise InvalidTopic("topics are strings")
        if text in ("mine", "notifications", "tenant"):
            return cls(text)  # type: ignore[arg-type]
        kind, _, target = text.partition(":")
        if kind not in ("job", "workflow", "queue") or not target or len(target) > 64:
            raise InvalidTopic(f"unknown topic {text[:80]!r}; use {TOPIC_FORMS}")
        if kind == "queue" and target != ALL_QUEUES and target not in ENGINES:
            raise InvalidTopic(f"unknown engine {target[:64]!r} in topic {text[:80]!r}")
        return cls(kind, target)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind

    def routing_key(self, who: Principal) -> str:
        """The hub's index key for this topic: the sockets to look at when an event with that key arrives."""
        if self.kind in ("mine", "notifications"):
            return user_key(who.tenant_id, who.user_id)
        if self.kind == "tenant":
            return tenant_key(who.tenant_id)
        return str(self)

    def covers(self, event: Event, who: Principal) -> bool:
        """Whether a socket of ``who`` subscribed to this topic hears ``event``."""
        if self.kind == "queue":
            engine = event.data.get("engine")
            return event.audience == "admins" and who.is_admin and self.target in (ALL_QUEUES, engine)
        if event.audience != "owner" or event.tenant_id != who.tenant_id:
            return False
        if self.kind == "tenant":
            return who.is_admin and event.type != EventType.NOTIFICATION_CREATED  # notifications stay personal
        if self.kind == "job":
            return event.job_id == self.target
        if self.kind == "workflow":
            return event.workflow_id == self.target
        own = event.user_id == who.user_id
        return own and (self.kind == "mine" or event.type == EventType.NOTIFICATION_CREATED)


def user_key(tenant_id: str, user_id: str) -> str:
    return f"user:{tenant_id}:{user_id}"


def tenant_key(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def routing_keys(event: Event) -> list[str]:
    """The index keys under which sockets that may hear ``event`` are found."""
    if event.audience == "admins":
        return [f"queue:{ALL_QUEUES}", f"queue:{event.data.get('engine')}"]
    keys = [tenant_key(event.tenant_id)]
    if event.user_id is not None:
        keys.append(user_key(event.tenant_id, event.user_id))
    if event.job_id is not None:
        keys.append(f"job:{event.job_id}")
    if event.workflow_id is not None:
        keys.append(f"workflow:{event.workflow_id}")
    return keys
