"""Tables of the notifications service: its own (inbox, preferences, deliveries, stream tickets, secrets) and its
read models of other services' data (recipients, group members, events, attendees)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Double, Index, Integer, MetaData, String, Table, Text

from gatherly.kernel.tables import USER_ID, Json, SequenceId, UtcDateTime, kernel_tables

metadata = MetaData()
kernel_tables(metadata)

ID = String(36)

# --- read models ---------------------------------------------------------------------------------------------------

# The users service's people (user.registered / confirmed / profile_updated / deleted): where to write, and whether
# they proved the address is theirs (unconfirmed addresses get no mail).
recipients = Table(
    "recipients",
    metadata,
    Column("user_id", USER_ID, primary_key=True),
    Column("email", String(320)),
    Column("display_name", String(80)),
    Column("confirmed", Boolean, nullable=False),
    # Where they are (their profile's location), for the weekly digest's events near them.
    Column("lat", Double),
    Column("lng", Double),
    Column("updated_at", UtcDateTime(), nullable=False),
    # A tombstone: an event that arrives after the deletion (another partition, a replay) must not bring them back.
    Column("deleted_at", UtcDateTime()),
    # An email invitation finds the account with that address (RecipientStore.with_email) without a scan.
    Index("ix_recipients_email", "email"),
)

# The groups service's groups: their visibility (the digest shows public groups' events to people nearby) and their
# tombstones (a membership event arriving after the group's deletion, on another topic, must not revive a member list).
groups = Table(
    "groups",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("deleted_at", UtcDateTime()),
    Column("visibility", String(16)),
)

# The groups service's memberships and roles: who hears of a group's new events.
group_members = Table(
    "group_members",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("role", String(32), nullable=False),
    Index("ix_group_members_user_id", "user_id"),
)

# The events service's events: what reminders and comments say, and when reminders are due.
events = Table(
    "events",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("group_id", ID, nullable=False),
    Column("group_name", String(100), nullable=False),
    Column("title", String(200), nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("place", String(800), nullable=False),
    Column("lat", Double),
    Column("lng", Double),
    Column("status", String(16), nullable=False),
    # The event's own change counter: an older snapshot arriving late (a redelivery) never overwrites a newer one.
    Column("sequence", Integer, nullable=False),
    # From `event.scheduled`: when, by whom, and its message (the cause of the members' notices). A member whose
    # joining is handled after it (another topic: no order between the two) is told then, under the same cause.
    Column("scheduled_at", UtcDateTime()),
    Column("scheduled_by", USER_ID),
    Column("scheduled_cause", String(128)),
    # The digest's queries: upcoming events by start, and near a place.
    Index("ix_events_starts_at", "starts_at"),
    Index("ix_events_lat_lng", "lat", "lng"),
    Index("ix_events_group_scheduled_at", "group_id", "scheduled_at"),
)

# The events service's RSVPs: who is going (told of comments, reminded) or waiting.
attendees = Table(
    "attendees",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("status", String(16), nullable=False),  # going | waitlisted
    Index("ix_attendees_user_id", "user_id"),
)

# --- the service's own ----------------------------------------------------------------------------------------------

# The in-app inbox. `seq` orders it (newest first in lists, oldest first in the live stream, whose event id it is).
notifications = Table(
    "notifications",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("user_id", USER_ID, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("title", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("link", String(500), nullable=False),
    # What caused it (the message id, or the reminder's key): the same cause never tells one person twice, even when
    # a consumer group is replayed from the beginning.
    Column("source", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("read_at", UtcDateTime()),
    Index("ux_notifications_source_user_id", "source", "user_id", unique=True),
    Index("ix_notifications_user_id_seq", "user_id", "seq"),
    # The unread count and `?unread=true`, without reading the rest of someone's inbox.
    Index("ix_notifications_user_id_read_at", "user_id", "read_at", "seq"),
    # SQLite hands out max(rowid)+1 without it: a deleted newest row's seq would come back, and a stream resuming
    # from that id would skip the new notification.
    sqlite_autoincrement=True,
)

preferences = Table(
    "preferences",
    metadata,
    Column("user_id", USER_ID, primary_key=True),
    Column("email", Json, nullable=False),  # {kind: bool}, only the kinds the person set
    Column("push", Json, nullable=False),
    Column("reminder_hours", Json, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# One row per notification and channel (email, push) to send: the row's id is the send's idempotency key.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # <notification id>:<channel>
    Column("notification_id", ID, nullable=False),
    Column("user_id", USER_ID, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    # The sender's next batch: pending rows in due order.
    Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# Single-use tickets for browsers' EventSource, which cannot send an Authorization header. Only a hash is kept.
stream_tickets = Table(
    "stream_tickets",
    metadata,
    Column("ticket_hash", String(64), primary_key=True),
    Column("user_id", USER_ID, nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# Invitations to addresses with no account, waiting to be mailed (the send is a `deliveries` row on the
# invitation_email channel). Deleted once sent: the link carries a live token.
invitation_mails = Table(
    "invitation_mails",
    metadata,
    Column("invitation_id", ID, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("group_name", String(100), nullable=False),
    Column("inviter_name", String(80), nullable=False),
    Column("link", String(500), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Addresses whose owner asked never to be emailed invitations again (the one-click link in an invitation), kept as
# the SHA-256 of the normalized address (kernel.addresses): the list does not hold the addresses themselves.
invitation_opt_outs = Table(
    "invitation_opt_outs",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Keys made at first start and kept (the unsubscribe links' HMAC key): every process of the service shares them.
secrets = Table(
    "secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# The reminder schedule: one row per event, person going and hours-before, due at the event's start minus those
# hours. Moved when the event's time changes, deleted when it is cancelled or the person stops going; a row is
# marked sent in the same transaction that puts the reminder in the inbox, so it is sent exactly once.
reminders = Table(
    "reminders",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("hours_before", Integer, primary_key=True),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    # The scheduler's next batch: unsent rows in due order.
    Index("ix_reminders_sent_at_due_at", "sent_at", "due_at"),
    Index("ix_reminders_user_id", "user_id"),
)

# Browsers' Web Push subscriptions. The id is a hash of the endpoint (a URL up to thousands of characters), so one
# browser's subscription is one row whoever registers it last.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", USER_ID, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("p256dh", String(200), nullable=False),
    Column("auth", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_push_subscriptions_user_id", "user_id"),
)

# Which of a push send's subscriptions took it: a retry of the send goes only to those still owed it.
push_receipts = Table(
    "push_receipts",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("subscription_id", String(64), primary_key=True),
    Column("delivered_at", UtcDateTime(), nullable=False),
    Index("ix_push_receipts_subscription_id", "subscription_id"),
    Index("ix_push_receipts_delivered_at", "delivered_at"),
)
