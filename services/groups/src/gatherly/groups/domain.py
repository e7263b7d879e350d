"""What the groups service's entities are and the rules they obey: no I/O, no framework.

Who may see what (decided once, here, and used by every endpoint):
- Every group that is not deleted is listed and can be read by anyone, private ones included: their existence
  is public. A deleted group is gone: 404 everywhere.
- The member list of a public group is public. The member list of a private group is shown to its members
  only: anonymous callers get 401, everybody else who is not a member (outsiders, pending requesters, banned
  people) gets 403 — never 404, since the group itself is listed and a 404 would pretend it does not exist.
- Pending requests are seen and decided by organizers and co-organizers ("managers"); 403 for anyone else.
- Only organizers edit or delete the group; organizers and co-organizers write announcements, invite by link or
  email, and see and lift bans.
- A person sees their own pending requests (and nobody else's, but for the managers of the group asked).
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, NewType

from gatherly.kernel.addresses import address_hash, valid_address
from gatherly.kernel.errors import DomainError, InvalidInput, TooManyRequests
from gatherly.kernel.geo import decimal_number
from gatherly.kernel.text import check_message, check_name

GroupId = NewType("GroupId", str)
UserId = NewType("UserId", str)

# --- limits -------------------------------------------------------------------------------------------------------

MAX_NAME = 100
MAX_DESCRIPTION = 5000
MAX_CITY = 100
MAX_TOPICS = 20
MAX_TOPIC = 50
MAX_QUESTIONS = 10
MAX_QUESTION = 300
MAX_ANSWER = 2000
MAX_SUBJECT = 200
MAX_BODY = 10_000
MAX_SLUG = 60
DEFAULT_RADIUS_KM = 50.0
# Beyond this a "nearby" search is no longer local, and its bounding box would cover most of the table.
MAX_RADIUS_KM = 1000.0


# --- roles and what they allow -------------------------------------------------------------------------------------


class Role(StrEnum):
    ORGANIZER = "organizer"
    CO_ORGANIZER = "co_organizer"
    EVENT_ORGANIZER = "event_organizer"
    MEMBER = "member"

    @property
    def rank(self) -> int:
        """Higher is more powerful: organizer > co_organizer > event_organizer > member."""
        return _RANKS[self]

    @property
    def manages_members(self) -> bool:
        """Organizers and co-organizers approve requests, change roles, remove and ban."""
        return self.rank >= Role.CO_ORGANIZER.rank

    @property
    def is_leader(self) -> bool:
        """The three leader roles create and edit events (and may upload the group's banner)."""
        return self.rank >= Role.EVENT_ORGANIZER.rank


_RANKS = {Role.ORGANIZER: 4, Role.CO_ORGANIZER: 3, Role.EVENT_ORGANIZER: 2, Role.MEMBER: 1}
MANAGER_ROLES = (Role.ORGANIZER, Role.CO_ORGANIZER)
LEADER_ROLES = (Role.ORGANIZER, Role.CO_ORGANIZER, Role.EVENT_ORGANIZER)


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class JoinPolicy(StrEnum):
    OPEN = "open"
    APPROVAL = "approval"


class Standing(StrEnum):
    """What a person is to a group, as `my_membership.status` shows it."""

    MEMBER = "member"
    PENDING = "pending"
    BANNED = "banned"


@dataclass(frozen=True)
class Relation:
    """One person's relation to one group: a role when a member, else pending / banned / nothing."""

    role: Role | None = None
    pending: bool = False
    banned: bool = False

    @property
    def standing(self) -> Standing | None:
        if self.role is not None:
            return Standing.MEMBER
        if self.banned:
            return Standing.BANNED
        if self.pending:
            return Standing.PENDING
        return None

    @property
    def is_member(self) -> bool:
        return self.role is not None


NOBODY = Relation()


# --- errors (api.py gives each its HTTP status) -----------------------------------------------------------------------


class GroupNotFound(DomainError):
    title = "No such group"


class NotAMember(DomainError):
    title = "Not a member"


class JoinRequestNotFound(DomainError):
    title = "No such join request"


class NotAllowed(DomainError):
    title = "Not allowed in this group"


class LoginRequired(DomainError):
    """Anonymous callers asking for what only some people may see (a private group's members)."""

    title = "Authentication required"


class AccountDeleted(DomainError):
    """A still-valid token of a person whose account was deleted (this service heard `user.deleted`): they may
    found or join nothing, or the erasure would be undone behind the saga's back."""

    title = "Account deleted"


class Banned(DomainError):
    title = "Banned from this group"


class LastOrganizer(DomainError):
    title = "A group needs an organizer"


class NotForYourself(DomainError):
    title = "Not on yourself"


class AlreadyRequested(DomainError):
    """A second request while the first is pending is refused, not silently dropped: the first one's answers are
    what the managers are reading; to change them, withdraw (leave) and ask again."""

    title = "Already asked to join"


class NeverSeen(DomainError):
    """Bans are for people the group has seen (members, requesters, past ones), not for any id typed in."""

    title = "Not known to this group"


class BanNotFound(DomainError):
    title = "No such ban"


class InvitationNotFound(DomainError):
    title = "No such invitation"


class InvitationUnusable(DomainError):
    """The invitation exists but may not be used any more: expired, revoked or used up."""

    title = "Invitation no longer valid"


class InvitationForAnotherAddress(DomainError):
    """An email invitation is for the person whose confirmed email is the invited address, nobody else."""

    title = "Invitation for another address"


class TooManyInvitations(TooManyRequests):
    """More email invitations in a day than one inviter, or one group, may send (the mail goes to anyone: a
    bound keeps Gatherly from being a way to spam)."""

    title = "Too many invitations"


# --- what each role may do ------------------------------------------------------------------------------------------


class Action(StrEnum):
    EDIT_GROUP = "edit the group"
    DELETE_GROUP = "delete the group"
    SEE_REQUESTS = "see join requests"
    DECIDE_REQUESTS = "approve or deny join requests"
    CHANGE_ROLES = "change roles"
    REMOVE_MEMBERS = "remove or ban members"
    ANNOUNCE = "write announcements"
    INVITE = "invite people"
    SEE_BANS = "see bans"
    LIFT_BANS = "lift bans"


# The least role that may do each thing.
LEAST_ROLE: dict[Action, Role] = {
    Action.EDIT_GROUP: Role.ORGANIZER,
    Action.DELETE_GROUP: Role.ORGANIZER,
    Action.SEE_REQUESTS: Role.CO_ORGANIZER,
    Action.DECIDE_REQUESTS: Role.CO_ORGANIZER,
    Action.CHANGE_ROLES: Role.CO_ORGANIZER,
    Action.REMOVE_MEMBERS: Role.CO_ORGANIZER,
    Action.ANNOUNCE: Role.CO_ORGANIZER,
    Action.INVITE: Role.CO_ORGANIZER,
    Action.SEE_BANS: Role.CO_ORGANIZER,
    Action.LIFT_BANS: Role.CO_ORGANIZER,
}


def may(relation: Relation, action: Action) -> bool:
    return relation.role is not None and relation.role.rank >= LEAST_ROLE[action].rank


def require(relation: Relation, action: Action) -> Role:
    """The caller's role when it allows `action`; NotAllowed otherwise."""
    if relation.role is None or not may(relation, action):
        least = LEAST_ROLE[action].value
        article = "an" if least[0] in "aeiou" else "a"  # an organizer, an event_organizer, a co_organizer
        raise NotAllowed(f"Only {article} {least} or above may {action.value}.")
    return relation.role


def may_see_members(visibility: Visibility, relation: Relation) -> bool:
    return visibility is Visibility.PUBLIC or relation.is_member


def require_member_list(visibility: Visibility, relation: Relation, *, anonymous: bool) -> None:
    """A private group's members are shown to its members: anonymous callers are asked to log in, anyone else
    who is not a member is refused."""
    if may_see_members(visibility, relation):
        return
    if anonymous:
        raise LoginRequired("Log in: the members of a private group are shown to its members.")
    raise NotAllowed("The members of a private group are shown to its members only.")


def check_role_change(actor: Role, target: Role, new_role: Role, organizers: int) -> None:
    """Organizers may give and take any role; a co-organizer only moves people below their own rank
    (members and event organizers) between those ranks. The last organizer keeps the role."""
    if actor is not Role.ORGANIZER and (target.rank >= actor.rank or new_role.rank >= actor.rank):
        raise NotAllowed("A co-organizer can only make members event organizers or members again.")
    if target is Role.ORGANIZER and new_role is not Role.ORGANIZER and organizers <= 1:
        raise LastOrganizer("Make someone else an organizer first.")


def check_removal(actor: Role, target: Role, organizers: int, *, actor_is_target: bool) -> None:
    if actor_is_target:
        raise NotForYourself("To leave the group, use DELETE /api/groups/{id}/members/me.")
    if actor is not Role.ORGANIZER and target.rank >= actor.rank:
        raise NotAllowed("A co-organizer can only remove members and event organizers.")
    if target is Role.ORGANIZER and organizers <= 1:
        raise LastOrganizer("The last organizer cannot be removed.")


def check_stepping_down(role: Role, organizers: int) -> None:
    """A leader may become a plain member without leaving; the last organizer may not (the group needs one)."""
    if role is Role.ORGANIZER and organizers <= 1:
        raise LastOrganizer("The last organizer cannot step down: make someone else an organizer first.")


def check_leaving(role: Role, organizers: int) -> None:
    if role is Role.ORGANIZER and organizers <= 1:
        raise LastOrganizer("The last organizer cannot leave: make someone else an organizer, or delete the group.")


class Join(StrEnum):
    """What asking to join a group does."""

    ALREADY_MEMBER = "already_member"
    ADMIT = "admit"  # an open group, or an invitation, takes the person at once
    REQUEST = "request"  # an approval group records a request with the answers to its questions


def decide_join(relation: Relation, policy: JoinPolicy, *, invited: bool = False) -> Join:
    """The whole joining rule: banned people can neither join nor ask, invited or not; a member stays a member;
    an invited person joins without approval (a pending request of theirs ends); a second request while the
    first is pending is refused (AlreadyRequested); otherwise the group's join policy decides."""
    if relation.banned:
        raise Banned("You were banned from this group.")
    if relation.is_member:
        return Join.ALREADY_MEMBER
    if invited:
        return Join.ADMIT
    if relation.pending:
        raise AlreadyRequested("Your request is waiting for a decision; leave the group to withdraw it first.")
    return Join.ADMIT if policy is JoinPolicy.OPEN else Join.REQUEST


MAX_MESSAGE = 1000


def decision_message(message: str | None) -> str | None:
    """The optional note an organizer adds when approving or denying (shown to the applicant): trimmed, or None.
    It is shown as written, so it follows the text policy of messages (no bidi overrides, no stray controls)."""
    if message is None:
        return None
    return _text(check_message(message, "message"), "message", MAX_MESSAGE) or None


# --- invitations ----------------------------------------------------------------------------------------------------

DEFAULT_INVITATION_DAYS = 7
MAX_INVITATION_DAYS = 30
MAX_INVITATION_USES = 1000
# Email invitations go to any address, so each inviter and each group may send only so many a day (the numbers are
# settings); the window slides: the oldest invitation in it leaving frees a place.
INVITATION_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class InvitationTerms:
    """What an organizer chooses for an invitation. An email invitation is for one person: one use."""

    expires_in: timedelta
    max_uses: int | None
    email: str | None


def invitation_terms(expires_in_days: int | None, max_uses: int | None, email: str | None) -> InvitationTerms:
    days = DEFAULT_INVITATION_DAYS if expires_in_days is None else expires_in_days
    if not 1 <= days <= MAX_INVITATION_DAYS:
        raise InvalidInput(f"expires_in_days must be 1 to {MAX_INVITATION_DAYS}.", field="expires_in_days")
    if max_uses is not None and not 1 <= max_uses <= MAX_INVITATION_USES:
        raise InvalidInput(f"max_uses must be 1 to {MAX_INVITATION_USES}.", field="max_uses")
    address = None
    if email is not None:
        address = valid_address(email, "email")
        if max_uses not in (None, 1):
            raise InvalidInput("An email invitation is for one person: max_uses is 1.", field="max_uses")
        max_uses = 1
    return InvitationTerms(timedelta(days=days), max_uses, address)


@dataclass(frozen=True)
class Invitation:
    """A link (or an email carrying one) that lets people join without approval. Only a hash of its token is
    kept: the token itself is shown once, to the organizer who made it (or sent by mail)."""

    id: str
    group_id: GroupId
    created_by: UserId
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    email: str | None = None
    revoked_at: datetime | None = None
    redacted_at: datetime | None = None  # sent to an account since deleted: its address is erased

    def check_usable(self, now: datetime, person_email_hash: str | None) -> None:
        """Usable now by this person (the hash of their confirmed email, None when not known): an email
        invitation is tied to its address, a link invitation is for whoever holds it. One whose address was erased
        (the account deleted) admits nobody: without its address it must not become a link for anyone."""
        if self.redacted_at is not None:
            raise InvitationUnusable("This invitation was sent to an account that has been deleted.")
        if self.email is not None and person_email_hash != address_hash(self.email):
            raise InvitationForAnotherAddress(
                "This invitation was sent to another email address; log in with the account of that address."
            )
        if self.revoked_at is not None:
            raise InvitationUnusable("This invitation was revoked.")
        if now >= self.expires_at:
            raise InvitationUnusable("This invitation has expired.")
        if self.max_uses is not None and self.uses >= self.max_uses:
            raise InvitationUnusable("This invitation has been used as often as it may be.")


@dataclass(frozen=True)
class InvitationLimits:
    """Email invitations allowed per INVITATION_WINDOW: to each inviter (all groups together) and to each group."""

    per_inviter: int
    per_group: int


def check_invitation_quota(sent: int, oldest: datetime | None, limit: int, now: datetime, *, by: str) -> None:
    """Refuses one more email invitation when `sent` (in the window, the oldest sent at `oldest`) reached `limit`;
    Retry-After is when the oldest leaves the window."""
    if sent < limit:
        return
    free_at = (oldest or now) + INVITATION_WINDOW
    raise TooManyInvitations(
        f"At most {limit} email invitations a day {by}; try again later.",
        retry_after=max(1, math.ceil((free_at - now).total_seconds())),
    )


# --- the group ------------------------------------------------------------------------------------------------------


class Location(NamedTuple):
    """A point in degrees. A named tuple (immutable, cheap to build: every card of a list has one), see GroupCard."""

    lat: float
    lng: float


@dataclass(frozen=True)
class GroupDetails:
    """What an organizer chooses about a group (everything but identity, counts and lifecycle)."""

    name: str
    description: str = ""
    topics: tuple[str, ...] = ()
    city: str | None = None
    location: Location | None = None
    visibility: Visibility = Visibility.PUBLIC
    join_policy: JoinPolicy = JoinPolicy.OPEN
    questions: tuple[str, ...] = ()
    banner_image_id: str | None = None


class GroupCard(NamedTuple):
    """What a list of groups shows of each (`GET /api/groups`): no description, questions nor dates, which a list
    neither shows nor needs to read. A named tuple, immutable like the frozen dataclasses here but built in a
    fraction of the time (a frozen dataclass sets each field through object.__setattr__: ~1 us a card of ten
    fields against ~0.25, and a list builds one per row)."""

    id: GroupId
    slug: str
    name: str
    topics: tuple[str, ...]
    city: str | None
    location: Location | None
    visibility: Visibility
    join_policy: JoinPolicy
    banner_image_id: str | None
    member_count: int


@dataclass(frozen=True)
class Group:
    id: GroupId
    slug: str
    details: GroupDetails
    member_count: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.details.name

    def card(self) -> GroupCard:
        details = self.details
        return GroupCard(
            id=self.id,
            slug=self.slug,
            name=details.name,
            topics=details.topics,
            city=details.city,
            location=details.location,
            visibility=details.visibility,
            join_policy=details.join_policy,
            banner_image_id=details.banner_image_id,
            member_count=self.member_count,
        )

    def changed(self, details: GroupDetails, now: datetime) -> Group:
        """The slug stays: links to the group keep working after a rename."""
        return replace(self, details=details, updated_at=now)


def new_group_id() -> GroupId:
    return GroupId(str(uuid.uuid4()))


def details_from(
    *,
    name: str,
    description: str = "",
    topics: Sequence[str] = (),
    city: str | None = None,
    location: Location | None = None,
    visibility: Visibility = Visibility.PUBLIC,
    join_policy: JoinPolicy = JoinPolicy.OPEN,
    questions: Sequence[str] = (),
    banner_image_id: str | None = None,
) -> GroupDetails:
    """Valid, normalised group details, or InvalidInput naming the field."""
    return GroupDetails(
        name=_text(check_name(name, "name"), "name", MAX_NAME, required=True),
        description=_text(description, "description", MAX_DESCRIPTION),
        topics=normalize_topics(topics),
        city=(_text(check_name(city, "city"), "city", MAX_CITY) or None) if city is not None else None,
        location=valid_location(location, "location") if location is not None else None,
        visibility=visibility,
        join_policy=join_policy,
        questions=_questions(questions),
        banner_image_id=banner_image_id or None,
    )


def _text(value: str, field_name: str, limit: int, *, required: bool = False) -> str:
    text = value.strip()
    if required and not text:
        raise InvalidInput(f"The {field_name} must not be empty.", field=field_name)
    if len(text) > limit:
        raise InvalidInput(f"The {field_name} is longer than {limit} characters.", field=field_name)
    return text


def normalize_topic(topic: str) -> str:
    """Topics compare case-insensitively and ignore surrounding and repeated spaces."""
    return " ".join(topic.split()).casefold()


def normalize_topics(topics: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for raw in topics:
        topic = normalize_topic(raw)
        if not topic:
            continue
        if len(topic) > MAX_TOPIC:
            raise InvalidInput(f"A topic is longer than {MAX_TOPIC} characters.", field="topics")
        seen.setdefault(topic)
    if len(seen) > MAX_TOPICS:
        raise InvalidInput(f"At most {MAX_TOPICS} topics.", field="topics")
    return tuple(seen)


def _questions(questions: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(q.strip() for q in questions)
    if len(cleaned) > MAX_QUESTIONS:
        raise InvalidInput(f"At most {MAX_QUESTIONS} questions.", field="questions")
    for question in cleaned:
        if not question:
            raise InvalidInput("A question must not be empty.", field="questions")
        if len(question) > MAX_QUESTION:
            raise InvalidInput(f"A question is longer than {MAX_QUESTION} characters.", field="questions")
    return cleaned


def valid_location(location: Location, field_name: str) -> Location:
    if not (math.isfinite(location.lat) and -90.0 <= location.lat <= 90.0):
        raise InvalidInput("Latitude must be between -90 and 90.", field=field_name)
    if not (math.isfinite(location.lng) and -180.0 <= location.lng <= 180.0):
        raise InvalidInput("Longitude must be between -180 and 180.", field=field_name)
    return location


def search_text(details: GroupDetails) -> str:
    """What `?q=` matches: name and description, case-folded once here so the query is a plain LIKE on any
    database (SQLite's lower() folds ASCII only)."""
    return f"{details.name}\n{details.description}".casefold()


# --- deletion: the group-deletion saga ------------------------------------------------------------------------------


class DeletionStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"  # no reply by the deadline: an operator looks (a reply that comes later still completes it)


class DeletionStep(StrEnum):
    CANCEL_EVENTS = "cancel_events"  # waiting for the events service (group_deletion.events_cancelled)
    DONE = "done"


# The events service answers within seconds when it runs; an hour covers a rolling update or a short outage of it.
DELETION_TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class Deletion:
    """The persisted state of one group's deletion saga (one per group: a group is deleted once).

    Hiding the group and ending its memberships is the saga's pivot, committed with group.deleted: the organizer
    asked for it and nothing after it can fail in a way that should bring the group back, so there is no
    compensating step. What is left (the events service cancelling upcoming events) is retried by the log's
    at-least-once delivery; a saga that hears nothing by its deadline is marked failed for an operator."""

    group_id: GroupId
    status: DeletionStatus
    step: DeletionStep
    deadline_at: datetime
    reason: str | None = None

    @property
    def overdue_reason(self) -> str:
        return f"No reply to step {self.step.value} by {self.deadline_at.isoformat()}."


# --- a member's account deleted ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenure:
    """One member of a group: their role and since when they belong."""

    user_id: UserId
    role: Role
    joined_at: datetime


def successor(remaining: Sequence[Tenure]) -> UserId | None:
    """Who becomes organizer when the group's last organizer deletes their account: the longest-standing
    co-organizer, else the longest-standing of the other members (whatever their role), else nobody (the group is
    then deleted). Ties of `joined_at` go to the smaller user id, so the choice never depends on row order."""
    co_organizers = [m for m in remaining if m.role is Role.CO_ORGANIZER]
    candidates = co_organizers or list(remaining)
    if not candidates:
        return None
    return min(candidates, key=lambda m: (m.joined_at, m.user_id)).user_id


# --- joining --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str


def answers_for(details: GroupDetails, answers: Sequence[str]) -> tuple[Answer, ...]:
    """An approval group's questions each need one non-empty answer, in order. Open groups ask nothing:
    answers sent to them are ignored."""
    if details.join_policy is JoinPolicy.OPEN:
        return ()
    if len(answers) != len(details.questions):
        raise InvalidInput(
            f"This group asks {len(details.questions)} question(s): send one answer for each, in order.",
            field="answers",
        )
    paired = []
    for index, (question, raw) in enumerate(zip(details.questions, answers, strict=True)):
        answer = raw.strip()
        if not answer:
            raise InvalidInput(f"Answer {index + 1} is empty.", field=f"answers.{index}")
        if len(answer) > MAX_ANSWER:
            raise InvalidInput(f"Answer {index + 1} is longer than {MAX_ANSWER} characters.", field=f"answers.{index}")
        paired.append(Answer(question, answer))
    return tuple(paired)


@dataclass(frozen=True)
class Announcement:
    subject: str
    body: str


def announcement_from(subject: str, body: str) -> Announcement:
    return Announcement(
        _text(subject, "subject", MAX_SUBJECT, required=True), _text(body, "body", MAX_BODY, required=True)
    )


# --- slugs ----------------------------------------------------------------------------------------------------------

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Latin letters that are not a base letter plus accents (NFKD leaves them whole, so encoding to ASCII dropped them:
# "Straße" became "strae"): spelt out as their languages do without them. Lower case: the name is lowered first.
_SPELT_OUT = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "œ": "oe",
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "\u0131": "i",
    }  # U+0131: dotless i
)


def slug_base(name: str) -> str:
    """A URL-safe slug from a name: accents dropped, letters like ß spelt out, lower case, words joined by '-'.
    Never a UUID, so `/api/groups/{id or slug}` can tell the two apart."""
    spelt = name.lower().translate(_SPELT_OUT)
    ascii_name = unicodedata.normalize("NFKD", spelt).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:MAX_SLUG].strip("-") or "group"
    return f"group-{slug}"[:MAX_SLUG] if looks_like_id(slug) else slug


def pick_slug(base: str, taken: Iterable[str]) -> str:
    """`base`, or `base-2`, `base-3`… whichever is free first."""
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: MAX_SLUG - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        n += 1


def looks_like_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- geography ------------------------------------------------------------------------------------------------------

# Distances and the search box are the kernel's (kernel/geo.py), shared with the events service.


def parse_near(value: str) -> Location:
    """`near=<lat>,<lng>` as the API takes it."""
    parts = value.split(",")
    if len(parts) != 2:
        raise InvalidInput("Give near as <lat>,<lng>, e.g. near=52.52,13.405.", field="near")
    try:
        location = Location(decimal_number(parts[0]), decimal_number(parts[1]))
    except ValueError:
        raise InvalidInput("Give near as <lat>,<lng>, e.g. near=52.52,13.405.", field="near")
    return valid_location(location, "near")


def valid_radius(radius_km: float) -> float:
    if not math.isfinite(radius_km) or radius_km <= 0 or radius_km > MAX_RADIUS_KM:
        raise InvalidInput(f"radius_km must be above 0 and at most {MAX_RADIUS_KM:g}.", field="radius_km")
    return radius_km


# --- search ---------------------------------------------------------------------------------------------------------


class GroupSort(StrEnum):
    RELEVANCE = "relevance"  # the name starting with `q`, then containing it, then the rest; newest first among equals
    NEWEST = "newest"
    MEMBERS = "members"  # most members first
    DISTANCE = "distance"  # nearest first; needs near
    NAME = "name"  # A to Z, case-insensitive

    @classmethod
    def _missing_(cls, value: object) -> GroupSort | None:
        # `nearest`, the name this order had before the contract's `distance`: links and cursors made with it still
        # work (the OpenAPI enum lists only the contract's names).
        return cls.DISTANCE if value == "nearest" else None


def group_sort(sort: GroupSort | None, near: Location | None, text: str | None = None) -> GroupSort:
    """The order asked for, or the default: nearest first with `near`, newest first without. Relevance is only ever
    asked for (never the default, not even with `q`: pages and cursors made before it keep their order), and needs
    the text it ranks by."""
    if sort is None:
        return GroupSort.DISTANCE if near is not None else GroupSort.NEWEST
    if sort is GroupSort.DISTANCE and near is None:
        raise InvalidInput("sort=distance needs near=<lat>,<lng>.", field="sort")
    if sort is GroupSort.RELEVANCE and not text:
        raise InvalidInput("sort=relevance needs q=<text>.", field="sort")
    return sort


def name_key(name: str) -> str:
    """What sort=name orders by: the name case-folded (in Python, so both databases order the same keys)."""
    return name.casefold()


@dataclass(frozen=True)
class GroupSearch:
    """What `GET /api/groups` asks for. With `near`, results are the groups within `radius_km`; `sort` orders
    them (by default nearest first with `near`, newest first without)."""

    text: str | None = None
    topic: str | None = None
    near: Location | None = None
    radius_km: float = DEFAULT_RADIUS_KM
    member: UserId | None = None
    pending: UserId | None = None  # only the groups this person asked to join and waits for
    sort: GroupSort = GroupSort.NEWEST

    @property
    def counted(self) -> bool:
        """Whether the page carries the search's `total`: the caller's own lists (`member=me`, `pending=me`) do."""
        return self.member is not None or self.pending is not None

    @property
    def filters(self) -> tuple[object, ...]:
        """What a cursor of this search is tied to (its position means nothing in another list): the filters and the
        order as asked, the text as the search folds it; `member` and `pending` as whether the caller asked for
        their own list, not whose it is."""
        near = None if self.near is None else (float(self.near.lat), float(self.near.lng), float(self.radius_km))
        text = self.text.casefold() if self.text else None
        return (text, self.topic, near, self.member is not None, self.pending is not None, self.sort.value)
