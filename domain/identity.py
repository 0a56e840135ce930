"""Who is acting: the user behind a request, a Kafka message or the engine itself."""

from __future__ import annotations

from dataclasses import dataclass, field

ADMIN_GROUP = "admin"
SYSTEM_USER = "system:workflow"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def group_key(name: str) -> str:
    """Groups compare without regard to ASCII case or surrounding ASCII spaces: the lane
    ``Assessor`` is the group ``assessor``. Nothing else is folded: Unicode case folding made
    ``Aſsessor`` (a long s) and ``assessor`` + a no-break space the group ``assessor``, so
    whoever may name a group at the identity provider could join another."""
    return name.strip(" \t\r\n").translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Actor:
    user_id: str
    email: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    admin_group: str = ADMIN_GROUP

    @classmethod
    def of(cls, user_id: str, *groups: str, email: str | None = None) -> Actor:
        return cls(user_id=user_id, email=email, groups=frozenset(group_key(g) for g in groups))

    @property
    def is_admin(self) -> bool:
        return group_key(self.admin_group) in self.groups

    def is_member(self, group: str | None) -> bool:
        return group is not None and group_key(group) in self.groups


SYSTEM = Actor(user_id=SYSTEM_USER, groups=frozenset({ADMIN_GROUP}))
