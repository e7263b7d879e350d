"""Events of the groups service: topics `group`, `membership` and `join_request`, all keyed by group id so
everything that happens to one group (its details, its members, its requests) keeps its order per topic; and
`group_deletion`, the replies the groups service waits for in the group-deletion saga."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.users import GeoPoint

# Roles, most powerful first. organizer and co_organizer manage members; those two and event_organizer
# ("leaders") create and edit events.
ROLES = ("organizer", "co_organizer", "event_organizer", "member")
LEADER_ROLES = ("organizer", "co_organizer", "event_organizer")


# --- topic `group` ----------------------------------------------------------------------------------------------


class GroupEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "group"
    AGGREGATE_ID: ClassVar[str] = "group_id"

    group_id: str


class GroupSnapshot(GroupEvent):
    """The whole public state of a group, so a read model (the events service's group summaries) can be
    upserted from one message. `visibility` is public | private; `join_policy` is open | approval."""

    slug: str
    name: str
    description: str = ""
    topics: tuple[str, ...] = ()  # a tuple, as `UserProfileUpdated.topics`: the same JSON array
    city: str | None = None
    location: GeoPoint | None = None
    visibility: str
    join_policy: str
    banner_image_id: str | None = None


class GroupCreated(GroupSnapshot):
    """A group was founded; `organizer_id` is its first organizer (a membership.joined follows)."""

    TYPE: ClassVar[str] = "group.created"

    organizer_id: str
    created_at: datetime


class GroupUpdated(GroupSnapshot):
    TYPE: ClassVar[str] = "group.updated"

    updated_by: str
    updated_at: datetime


class GroupDeleted(GroupEvent):
    """An organizer deleted the group: the first step of the group-deletion saga. It is hidden at once; the
    events service cancels its upcoming events, tells their attendees and answers with
    group_deletion.events_cancelled. `member_ids` are everyone who belonged to it at that moment (their
    memberships end with the group: no membership.left follows); `requester_ids` are the people whose join
    requests were still pending (they end too: no join_request.denied follows)."""

    TYPE: ClassVar[str] = "group.deleted"

    slug: str
    name: str
    deleted_by: str
    member_ids: list[str]
    requester_ids: list[str] = []
    deleted_at: datetime


class GroupAnnouncement(GroupEvent):
    """An organizer or co-organizer wrote to the whole group. `recipient_ids` are the members when it was
    sent, the author excepted, so the notifications service needs no member list of its own to deliver it."""

    TYPE: ClassVar[str] = "group.announcement"

    announcement_id: str
    group_name: str
    author_id: str
    subject: str
    body: str
    recipient_ids: list[str]
    sent_at: datetime


class GroupInvitationSent(GroupEvent):
    """A manager invited someone by email (`email` normalized: trimmed, NFC, lower case). The notifications service
    tells the person whose confirmed account has this address (in-app, and by email per their preferences), or
    else mails the address itself, and links to the group with the invitation's `token`: only a hash of it is
    stored by the groups service, so the message carries the one copy the mail needs. The token is not a secret
    worth stealing from the log: an email invitation admits only the person whose confirmed email is `email`
    (the groups service compares hashes), that is, whoever the mail reaches anyway. The invitation is for one
    use and lapses at `expires_at`."""

    TYPE: ClassVar[str] = "group.invitation_sent"

    invitation_id: str
    slug: str
    group_name: str
    invited_by: str
    email: str
    token: str
    expires_at: datetime
    sent_at: datetime


# --- topic `membership` (key: group id, so one group's membership changes keep their order) -----------------------


class MembershipEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "membership"
    AGGREGATE_ID: ClassVar[str] = "group_id"

    group_id: str
    user_id: str


class MembershipJoined(MembershipEvent):
    """Someone became a member. `via` is created (the founder) | open (joined an open group) | approval (a request
    approved, also when the group switched from approval to open) | invitation (joined with an invitation)."""

    TYPE: ClassVar[str] = "membership.joined"

    role: str
    via: str
    joined_at: datetime


class MembershipLeft(MembershipEvent):
    TYPE: ClassVar[str] = "membership.left"

    role: str
    left_at: datetime


class MembershipRoleChanged(MembershipEvent):
    TYPE: ClassVar[str] = "membership.role_changed"

    role: str
    previous_role: str
    changed_by: str
    changed_at: datetime


class MembershipRemoved(MembershipEvent):
    """A leader removed a member; with `banned` the person cannot join again."""

    TYPE: ClassVar[str] = "membership.removed"

    role: str
    removed_by: str
    banned: bool
    removed_at: datetime


class MembershipBanLifted(MembershipEvent):
    """A manager lifted a ban: `user_id` may ask to join (or join) again. No membership comes back with it. Also
    published when the banned person's account is deleted (`lifted_by` is then the person themself)."""

    TYPE: ClassVar[str] = "membership.ban_lifted"

    lifted_by: str
    lifted_at: datetime


# --- topic `join_request` (key: group id) ---------------------------------------------------------------------------


class QuestionAnswer(BaseModel):
    question: str
    answer: str


class JoinRequestEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "join_request"
    AGGREGATE_ID: ClassVar[str] = "group_id"

    group_id: str
    user_id: str
    group_name: str


class JoinRequestCreated(JoinRequestEvent):
    """Someone asked to join a group that approves its members. `approver_ids` are the organizers and
    co-organizers, who are told (`join_requested`)."""

    TYPE: ClassVar[str] = "join_request.created"

    answers: list[QuestionAnswer] = []
    approver_ids: list[str]
    requested_at: datetime


class JoinRequestApproved(JoinRequestEvent):
    """The requester (`user_id`) is told (`join_approved`); a membership.joined follows on its topic. `message` is
    the manager's optional note to the applicant. When a group switches from approval to open, every pending
    request is approved this way, `decided_by` the organizer who switched it."""

    TYPE: ClassVar[str] = "join_request.approved"

    decided_by: str
    decided_at: datetime
    message: str | None = None


class JoinRequestDenied(JoinRequestEvent):
    """The requester is told (`join_denied`), with the manager's optional `message`."""

    TYPE: ClassVar[str] = "join_request.denied"

    decided_by: str
    decided_at: datetime
    message: str | None = None


class JoinRequestWithdrawn(JoinRequestEvent):
    """The request ended before anyone decided: the requester took it back, or joined with an invitation meanwhile
    (a membership.joined with `via` invitation follows)."""

    TYPE: ClassVar[str] = "join_request.withdrawn"

    withdrawn_at: datetime


# --- topic `group_deletion` (key: group id): the other services' replies in the group-deletion saga -------------


class GroupDeletionReply(IntegrationEvent):
    """Published by a service taking part in the group-deletion saga (not by the groups service, which runs
    the saga and waits for these replies; its schema lives here because the saga is the groups service's)."""

    TOPIC: ClassVar[str] = "group_deletion"
    AGGREGATE_ID: ClassVar[str] = "group_id"

    group_id: str


class GroupEventsCancelled(GroupDeletionReply):
    """The events service's answer to group.deleted: every upcoming event of the group is cancelled and its
    attendees were told (`cancelled_event_ids` may be empty). Publishing it again is harmless."""

    TYPE: ClassVar[str] = "group_deletion.events_cancelled"

    cancelled_event_ids: list[str] = []
    cancelled_at: datetime
