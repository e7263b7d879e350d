"""What the notifications service's entities are and the rules they obey: who is told what, through which channel,
and what people may choose. No I/O, no framework."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import NewType

from gatherly.kernel.egress import ip_literal, is_public_address
from gatherly.kernel.errors import TooManyRequests

UserId = NewType("UserId", str)
EventId = NewType("EventId", str)
GroupId = NewType("GroupId", str)


class Kind(StrEnum):
    """What a notification is about (api.md's list, plus `join_denied` and `group_deleted`, which the issue's
    rules ask for: requesters hear of a denial too, members of their group's deletion)."""

    EVENT_SCHEDULED = "event_scheduled"
    EVENT_UPDATED = "event_updated"
    EVENT_CANCELLED = "event_cancelled"
    RSVP_CONFIRMED = "rsvp_confirmed"
    RSVP_WAITLISTED = "rsvp_waitlisted"
    RSVP_PROMOTED = "rsvp_promoted"
    EVENT_REMINDER = "event_reminder"
    JOIN_REQUESTED = "join_requested"
    JOIN_APPROVED = "join_approved"
    JOIN_DENIED = "join_denied"
    COMMENT_POSTED = "comment_posted"
    GROUP_ANNOUNCEMENT = "group_announcement"
    GROUP_DELETED = "group_deleted"
    GROUP_INVITATION = "group_invitation"
    WEEKLY_DIGEST = "weekly_digest"


class Channel(StrEnum):
    IN_APP = "in_app"
    EMAIL = "email"
    PUSH = "push"
    # An email to an address rather than a person: an invitation to someone with no account. Not a channel people
    # choose in their preferences; the address's owner stops it with the invitations opt-out.
    INVITATION_EMAIL = "invitation_email"


# api.md: email for every kind but comment_posted (busy threads would flood inboxes); push for every kind but the
# weekly digest (below).
EMAIL_OFF_BY_DEFAULT = frozenset({Kind.COMMENT_POSTED})
# The digest is a reading for the week, not news for the lock screen.
PUSH_OFF_BY_DEFAULT = frozenset({Kind.WEEKLY_DIGEST})
DEFAULT_REMINDER_HOURS = (24, 2)
# The defaults as the preferences' tables start (a person's choices then replace their kinds' values, in place): made
# once, where iterating Kind (EnumType's generator), `.value` and `wants` per kind cost ~25 µs a read's two tables.
EMAIL_DEFAULTS = MappingProxyType({kind.value: kind not in EMAIL_OFF_BY_DEFAULT for kind in Kind})
PUSH_DEFAULTS = MappingProxyType({kind.value: kind not in PUSH_OFF_BY_DEFAULT for kind in Kind})
# A reminder more than four weeks ahead is a calendar's job; more than five reminders per event is noise.
MAX_REMINDER_HOURS = 24 * 28
MAX_REMINDERS = 5


class InvalidPreferences(ValueError):
    """Preferences that cannot be set: every field at fault with why (`faults`, (field, message) pairs), so that
    one answer names them all; `detail` is the one fault's message, or says there are several."""

    def __init__(self, faults: Sequence[tuple[str, str]]) -> None:
        self.faults = tuple(faults)
        self.detail = self.faults[0][1] if len(self.faults) == 1 else "The request is not valid."
        super().__init__(self.detail)


@dataclass(frozen=True)
class Preferences:
    """A person's choices. Kinds not named keep their default, so a kind added later is on for everyone who did
    not switch it off."""

    email: Mapping[Kind, bool] = field(default_factory=dict)
    push: Mapping[Kind, bool] = field(default_factory=dict)
    reminder_hours: tuple[int, ...] = DEFAULT_REMINDER_HOURS

    def wants(self, channel: Channel, kind: Kind) -> bool:
        if channel is Channel.IN_APP:
            return True  # the inbox keeps everything; the other channels are what people choose
        if channel is Channel.EMAIL:
            return self.email.get(kind, kind not in EMAIL_OFF_BY_DEFAULT)
        if channel is Channel.PUSH:
            return self.push.get(kind, kind not in PUSH_OFF_BY_DEFAULT)
        return False  # an address's email is nobody's preference

    def without(self, channel: Channel, kind: Kind) -> Preferences:
        """These preferences with one kind switched off on one channel (an unsubscribe link)."""
        if channel is Channel.EMAIL:
            return Preferences({**self.email, kind: False}, self.push, self.reminder_hours)
        return Preferences(self.email, {**self.push, kind: False}, self.reminder_hours)

    def email_table(self) -> dict[str, bool]:
        """What `wants` answers for email, every kind by value in Kind's order."""
        return {**EMAIL_DEFAULTS, **{kind.value: on for kind, on in self.email.items()}}

    def push_table(self) -> dict[str, bool]:
        """What `wants` answers for push, every kind by value in Kind's order."""
        return {**PUSH_DEFAULTS, **{kind.value: on for kind, on in self.push.items()}}


def preferences_from(email: Mapping[str, bool], push: Mapping[str, bool], reminder_hours: Iterable[int]) -> Preferences:
    """Preferences as a person set them, or InvalidPreferences naming every field at fault (each unknown kind of
    either channel, and the reminders)."""
    hours = list(reminder_hours)
    faults = [*_unknown_kinds("email", email), *_unknown_kinds("push", push), *_hours_faults(hours)]
    if faults:
        raise InvalidPreferences(faults)
    return Preferences(
        {Kind(name): bool(on) for name, on in email.items()},
        {Kind(name): bool(on) for name, on in push.items()},
        tuple(sorted(set(hours), reverse=True)),
    )


KNOWN_KINDS = frozenset(kind.value for kind in Kind)
UNKNOWN_KIND = f"Unknown kind; known: {', '.join(sorted(KNOWN_KINDS))}."


def _unknown_kinds(channel: str, choices: Mapping[str, bool]) -> list[tuple[str, str]]:
    """(field, message) of each kind `choices` names that does not exist (the body bounds how many it names). The
    field holds the whole name, as the validation of a kind's value names it: cut short, two names with the same
    beginning were one field twice."""
    return [(f"{channel}.{name}", UNKNOWN_KIND) for name in choices if name not in KNOWN_KINDS]


def _hours_faults(hours: list[int]) -> list[tuple[str, str]]:
    if len(hours) > MAX_REMINDERS:
        return [("reminders.hours_before", f"At most {MAX_REMINDERS} reminders per event.")]
    if any(not 1 <= value <= MAX_REMINDER_HOURS for value in hours):
        return [("reminders.hours_before", f"Each reminder is 1 to {MAX_REMINDER_HOURS} hours before the event.")]
    return []


# --- who is told what -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """What one person is told: the inbox entry, and what emails and pushes are made of."""

    user_id: UserId
    kind: Kind
    title: str
    body: str
    link: str


@dataclass(frozen=True)
class EventFacts:
    """What the notifications service knows of an event (its read model, from the event topic)."""

    event_id: EventId
    group_id: GroupId
    group_name: str
    title: str
    starts_at: datetime | None  # None: an event this service has not heard of yet (its topic is read apart)
    timezone: str
    place: str  # the venue's name and address, "Online", or "" when not said yet
    status: str = "scheduled"


def unknown_event(event_id: str, group_id: str) -> EventFacts:
    """An event an RSVP or comment names before its own topic told us of it: still worth telling, in words that
    need no details."""
    return EventFacts(EventId(event_id), GroupId(group_id), "", "your event", None, "", "")


def _on(event: EventFacts) -> str:
    return f" on {when(event.starts_at)}" if event.starts_at is not None else ""


def _at(event: EventFacts) -> str:
    return f" at {event.place}" if event.place else ""


def audience(people: Iterable[str], *, actor: str | None) -> list[UserId]:
    """Everyone named once, in a stable order, without the person who acted: nobody is told of their own action."""
    return sorted({UserId(p) for p in people if p != actor})


def event_link(event_id: str) -> str:
    return f"/events/{event_id}"


def group_link(group_id: str) -> str:
    return f"/groups/{group_id}"


def when(starts_at: datetime) -> str:
    return starts_at.strftime("%a %d %b %Y, %H:%M UTC")


def event_scheduled(event: EventFacts, members: Iterable[str], *, by: str) -> list[Notice]:
    body = f"{event.group_name} meets{_on(event)}{_at(event)}."
    return _each(members, by, Kind.EVENT_SCHEDULED, f"New event: {event.title}", body, event_link(event.event_id))


# What attendees are told about; other changes (description, capacity) are not worth an interruption.
CHANGES_WORTH_TELLING = {
    "starts_at": "the time",
    "ends_at": "the end time",
    "venue": "the place",
    "online": "the place",
    "title": "the title",
}


def event_updated(event: EventFacts, changed: Iterable[str], attendees: Iterable[str], *, by: str) -> list[Notice]:
    what = sorted({CHANGES_WORTH_TELLING[c] for c in changed if c in CHANGES_WORTH_TELLING})
    if not what:
        return []
    body = f"The organizers changed {_and(what)}. It is now{_on(event)}{_at(event)}."
    return _each(attendees, by, Kind.EVENT_UPDATED, f"Changed: {event.title}", body, event_link(event.event_id))


def event_cancelled(
    event_id: str, title: str, starts_at: datetime, reason: str, people: Iterable[str], *, by: str
) -> list[Notice]:
    why = " because its group was deleted" if reason == "group_deleted" else ""
    body = f"{title} on {when(starts_at)} is cancelled{why}."
    return _each(people, by, Kind.EVENT_CANCELLED, f"Cancelled: {title}", body, event_link(event_id))


def rsvp_outcome(kind: Kind, event: EventFacts, user_id: str, *, position: int | None = None) -> Notice:
    """The answer to someone's RSVP: a receipt of what the event decided (a seat, or a place in the queue), or
    the news that a seat came free for them. Not told of their own action: of its outcome."""
    title, body = {
        Kind.RSVP_CONFIRMED: ("You're going", f"You have a seat at {event.title}{_on(event)}."),
        Kind.RSVP_WAITLISTED: (
            "You're on the waitlist",
            f"{event.title} is full; you are number {position} on the waitlist and get a seat automatically.",
        ),
        Kind.RSVP_PROMOTED: ("A seat came free", f"You now have a seat at {event.title}{_on(event)}."),
    }[kind]
    return Notice(UserId(user_id), kind, title, body, event_link(event.event_id))


def comment_posted(event: EventFacts, attendees: Iterable[str], *, author: str, text: str) -> list[Notice]:
    excerpt = text if len(text) <= 140 else text[:139] + "…"
    return _each(
        attendees, author, Kind.COMMENT_POSTED, f"New comment on {event.title}", excerpt, event_link(event.event_id)
    )


def join_requested(group_id: str, group_name: str, approvers: Iterable[str], *, requester: str) -> list[Notice]:
    return _each(
        approvers,
        requester,
        Kind.JOIN_REQUESTED,
        f"Someone asks to join {group_name}",
        "A new join request is waiting for your decision.",
        group_link(group_id) + "/requests",
    )


def join_decided(
    group_id: str, group_name: str, requester: str, *, approved: bool, by: str, message: str | None = None
) -> list[Notice]:
    """The requester hears the decision, with the manager's note when they wrote one."""
    note = f"\n\n{message}" if message else ""
    if approved:
        return _each(
            [requester],
            by,
            Kind.JOIN_APPROVED,
            f"Welcome to {group_name}",
            "Your request to join was approved." + note,
            group_link(group_id),
        )
    return _each(
        [requester],
        by,
        Kind.JOIN_DENIED,
        f"Your request to join {group_name}",
        "Your request to join was declined." + note,
        group_link(group_id),
    )


def invitation_link(group_id: str, token: str) -> str:
    """Where an invitation leads: the group's page, which joins with the token (no approval needed)."""
    return f"{group_link(group_id)}?{urllib.parse.urlencode({'invitation': token})}"


def group_invitation(group_id: str, group_name: str, person: str, token: str, *, by: str) -> list[Notice]:
    """An invitation mailed to a person's address: the link carries its token (joining with it needs no approval)."""
    return _each(
        [person],
        by,
        Kind.GROUP_INVITATION,
        f"You are invited to join {group_name}",
        "Follow the link to join the group; no approval needed.",
        invitation_link(group_id, token),
    )


@dataclass(frozen=True)
class InvitationMail:
    """An invitation to an address with no account: mailed once, and forgotten once sent (its link is live)."""

    invitation_id: str
    email: str
    group_name: str
    inviter_name: str
    link: str
    expires_at: datetime

    @property
    def title(self) -> str:
        return f"{self.inviter_name or 'Someone'} invites you to join {self.group_name} on Gatherly"

    @property
    def body(self) -> str:
        return (
            f"{self.inviter_name or 'An organizer'} invited you to {self.group_name}. Follow the link to join; "
            f"you sign up with this address first if you have no account. The invitation is for this address "
            f"only and lapses on {when(self.expires_at)}."
        )


def group_announcement(
    group_id: str, group_name: str, subject: str, text: str, recipients: Iterable[str], *, author: str
) -> list[Notice]:
    return _each(recipients, author, Kind.GROUP_ANNOUNCEMENT, f"{group_name}: {subject}", text, group_link(group_id))


def group_deleted(group_name: str, members: Iterable[str], *, by: str) -> list[Notice]:
    return _each(
        members,
        by,
        Kind.GROUP_DELETED,
        f"{group_name} was deleted",
        f"The organizers deleted {group_name}; its upcoming events are cancelled.",
        "/groups",
    )


def reminder(event: EventFacts, user_id: str, hours_before: int) -> Notice:
    soon = f"in {hours_before} hours" if hours_before != 1 else "in an hour"
    body = f"{event.title} starts {soon}{_on(event)}{_at(event)}."
    return Notice(UserId(user_id), Kind.EVENT_REMINDER, f"Reminder: {event.title}", body, event_link(event.event_id))


def _each(people: Iterable[str], actor: str | None, kind: Kind, title: str, body: str, link: str) -> list[Notice]:
    return [Notice(person, kind, title, body, link) for person in audience(people, actor=actor)]


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# --- reminders --------------------------------------------------------------------------------------------------


def reminder_times(starts_at: datetime, hours_before: Iterable[int], *, now: datetime) -> list[tuple[int, datetime]]:
    """When each reminder of an event is due: only those still ahead (a reminder whose moment passed is not sent
    late, e.g. 24 h before an event someone joined 3 h before it)."""
    due = [(hours, starts_at - timedelta(hours=hours)) for hours in hours_before]
    return [(hours, at) for hours, at in due if at > now]


# --- one-click unsubscribe (RFC 8058) ---------------------------------------------------------------------------


def unsubscribe_signature(key: bytes, user_id: str, kind: Kind) -> str:
    """What proves an unsubscribe link came from us: an HMAC of the person and the kind, so the link needs no
    login and cannot be turned into anyone else's (or another kind's)."""
    return hmac.new(key, f"{user_id}\n{kind.value}".encode(), hashlib.sha256).hexdigest()[:40]


def signature_matches(key: bytes, user_id: str, kind: Kind, signature: str) -> bool:
    return _same(unsubscribe_signature(key, user_id, kind), signature)


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of a signature from a link; as bytes, since compare_digest refuses (TypeError) a
    str with non-ASCII characters, which anyone can put in a link."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


# --- never email me invitations again ----------------------------------------------------------------------------


def opt_out_signature(key: bytes, email_hash: str) -> str:
    """What proves an invitations opt-out link came from us: an HMAC of the address's hash (the link names the hash,
    never the address), so it needs no login and cannot be turned into anyone else's opt-out."""
    return hmac.new(key, f"invitations\n{email_hash}".encode(), hashlib.sha256).hexdigest()[:40]


def opt_out_matches(key: bytes, email_hash: str, signature: str) -> bool:
    return _same(opt_out_signature(key, email_hash), signature)


# --- live streams --------------------------------------------------------------------------------------------------


# What a refused stream's Retry-After says: a place frees when another stream of the person closes, which no one can
# foretell; the stream's own `retry:` hint (3 s) is the pace at which a client tries again.
STREAM_RETRY_AFTER_S = 3


class TooManyStreams(TooManyRequests):
    """A person has as many live streams open on this process as one may (each holds a connection and looks at the
    database on every wake-up and heartbeat). The new stream is refused rather than the oldest closed: a closed
    EventSource reconnects by itself, so closing the oldest would have tabs take turns closing each other."""

    title = "Too many live streams"


def check_stream_allowed(open_streams: int, limit: int) -> None:
    if open_streams >= limit:
        raise TooManyStreams(
            f"At most {limit} live streams at once; close one (another tab or device) first.",
            retry_after=STREAM_RETRY_AFTER_S,
        )


# --- web push subscriptions -------------------------------------------------------------------------------------


class InvalidSubscription(ValueError):
    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


def check_subscription(endpoint: str, p256dh: str, auth: str, *, plain_http_on_loopback: bool) -> None:
    """A browser's PushSubscription as the Push API gives it: an https endpoint (the server posts there, so nothing
    else: no other scheme, no credentials in it), a P-256 public key and a 16-byte auth secret (RFC 8291). This
    machine (plain http too) only in dev mode, for a local push service; a private, link-local or multicast address
    never. A host name is checked here only by its form; what it resolves to is the use case's check (I/O)."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        url.port  # noqa: B018 -- parsed here so a bad port ("https://h:99999/") is refused now, not at each send
    except ValueError:
        raise InvalidSubscription("endpoint", "Not a URL.") from None
    if not url.hostname or url.username or url.password:
        raise InvalidSubscription("endpoint", "A push endpoint names a host and no credentials.")
    literal = ip_literal(url.hostname)
    loopback = url.hostname == "localhost" or (literal is not None and ipaddress.ip_address(literal).is_loopback)
    if url.scheme != "https" and not (url.scheme == "http" and loopback and plain_http_on_loopback):
        raise InvalidSubscription("endpoint", "A push endpoint is an https URL.")
    if loopback and not plain_http_on_loopback:
        # The server posts to the endpoint: outside dev mode, never to this machine.
        raise InvalidSubscription("endpoint", "A push endpoint is a public host.")
    if literal is not None and not is_public_address(literal, allow_loopback=plain_http_on_loopback):
        raise InvalidSubscription("endpoint", "A push endpoint is a public host.")
    if len(_b64url(p256dh, "keys.p256dh")) != 65 or not _b64url(p256dh, "keys.p256dh").startswith(b"\x04"):
        raise InvalidSubscription("keys.p256dh", "An uncompressed P-256 public key (65 bytes, base64url).")
    if len(_b64url(auth, "keys.auth")) != 16:
        raise InvalidSubscription("keys.auth", "A 16-byte authentication secret (base64url).")


def _b64url(value: str, field: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        raise InvalidSubscription(field, "Not base64url.") from None


# --- the weekly digest ------------------------------------------------------------------------------------------

DIGEST_DAYS = 7
DIGEST_NEAR_KM = 50.0
DIGEST_MAX_EVENTS = 10


def digest_week(now: datetime) -> str:
    """The ISO week a digest belongs to ("2026-W48"): one per person and week."""
    year, week, _ = now.isocalendar()
    return f"{year}-W{week:02d}"


def weekly_digest(user_id: str, mine: list[EventFacts], near: list[EventFacts]) -> Notice | None:
    """The week ahead in a person's groups and near them; nothing when there is nothing to say."""
    if not mine and not near:
        return None
    lines: list[str] = []
    if mine:
        lines.append("In your groups:")
        lines += [f"- {e.title} ({e.group_name}){_on(e)}{_at(e)}" for e in mine[:DIGEST_MAX_EVENTS]]
    if near:
        lines.append("Near you:")
        lines += [f"- {e.title} ({e.group_name}){_on(e)}{_at(e)}" for e in near[:DIGEST_MAX_EVENTS]]
    return Notice(UserId(user_id), Kind.WEEKLY_DIGEST, "Your week on Gatherly", "\n".join(lines), "/events")
