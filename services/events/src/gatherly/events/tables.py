"""Tables of the events service: its own (events, RSVPs) and its read models of other services' data."""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text

from gatherly.kernel.read_models import ready_images_table
from gatherly.kernel.tables import USER_ID, Json, UtcDateTime, kernel_tables

metadata = MetaData()
kernel_tables(metadata)

ID = String(36)

events = Table(
    "events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("group_id", ID, nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("search_text", Text, nullable=False),  # title + description, case-folded (see domain.search_text)
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("ends_at", UtcDateTime(), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("venue_name", String(200)),
    Column("venue_address", String(500)),
    Column("lat", Double),
    Column("lng", Double),
    # The venue as a point on the unit sphere (domain.unit_vector): the nearby search's exact order and radius.
    Column("x", Double),
    Column("y", Double),
    Column("z", Double),
    Column("online_url", String(2000)),
    Column("capacity", Integer),
    Column("guest_limit", Integer, nullable=False),
    Column("rsvp_opens_at", UtcDateTime()),
    Column("rsvp_closes_at", UtcDateTime()),
    Column("cover_image_id", String(64)),
    Column("status", String(16), nullable=False),
    Column("sequence", Integer, nullable=False),
    # Seats taken (guests included) and parties waiting, kept under the event row's lock with every RSVP, so
    # lists show them without counting rows.
    Column("going_count", Integer, nullable=False),
    Column("waitlist_count", Integer, nullable=False),
    # The last FIFO number handed out to an answer (see domain.Rsvp.queue_no).
    Column("queue_counter", Integer, nullable=False),
    # Check-ins of people who deleted their account since (their RSVP rows are gone): counted, never named.
    Column("anonymous_check_ins", Integer, nullable=False, server_default="0"),
    Column("created_by", USER_ID, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("cancelled_at", UtcDateTime()),
    # An occurrence of a recurring series, and the local date (YYYY-MM-DD) its rule gave it: one per date.
    Column("series_id", ID),
    Column("occurrence_date", String(10)),
    Index("ux_events_series_id_occurrence_date", "series_id", "occurrence_date", unique=True),
    # The UID of the VEVENT an imported event came from: a re-import into the group updates it.
    Column("source_uid", String(255)),
    Index("ux_events_group_id_source_uid", "group_id", "source_uid", unique=True),
    # A group's upcoming events (group deletion, a member leaving) and its listing by start.
    Index("ix_events_group_id_starts_at", "group_id", "starts_at"),
    # The search's default order (by start, paged by (starts_at, id)).
    Index("ix_events_starts_at_id", "starts_at", "id"),
    # The nearby search narrows to a latitude band with this index, then checks longitude, the exact distance and
    # the other filters, and orders, from the index alone (it covers the query); whole rows only for the page.
    Index("ix_events_nearby", "lat", "lng", "x", "y", "z", "status", "starts_at", "group_id", "id"),
    # The nearby search soonest first reads upcoming events in start order from this index alone (it covers the
    # place and the group), so a dense radius yields its first page after a few hundred entries, unsorted.
    Index("ix_events_upcoming_places", "status", "starts_at", "id", "lat", "lng", "x", "y", "z", "group_id"),
)

# Recurring series: the rule, what each occurrence is made of (recurrence.Template as JSON) and how far it has been
# made into events; tasks.py tops them up to the horizon as time passes.
series = Table(
    "series",
    metadata,
    Column("id", ID, primary_key=True),
    Column("group_id", ID, nullable=False),
    Column("rule", String(300), nullable=False),
    Column("first_start", String(19), nullable=False),  # naive local wall-clock time of the first event
    Column("template", Json, nullable=False),
    Column("generated_through", String(10)),  # the last local date made into an event
    Column("ends_before", String(10)),  # cancelled from this local date on
    Column("created_by", USER_ID, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    # The UID of the recurring VEVENT an imported series came from: a re-import into the group finds it.
    Column("source_uid", String(255)),
    # Local dates (YYYY-MM-DD) the rule gives that are not occurrences: an imported VEVENT's EXDATE (null: none).
    Column("excluded_days", Json),
    # Local dates of occurrences besides the rule's (an imported VEVENT's RDATE; null: none).
    Column("added_days", Json),
    # Occurrences that differ from the template (imported RECURRENCE-IDs, RDATEs at another time): local date ->
    # their details as recurrence.Template JSON (null: none).
    Column("changed_days", Json),
    Index("ux_series_group_id_source_uid", "group_id", "source_uid", unique=True),
)

# Read model of the images service's ready event covers (image.ready with purpose event_cover / image.deleted).
cover_images = ready_images_table(metadata, "cover_images")

rsvps = Table(
    "rsvps",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("guests", Integer, nullable=False),
    Column("queue_no", Integer, nullable=False),
    Column("responded_at", UtcDateTime(), nullable=False),
    Column("checked_in_at", UtcDateTime()),
    # A member leaving the group: their RSVPs, found without a scan.
    Index("ix_rsvps_user_id", "user_id", "status"),
    # The head of an event's waitlist and a waiting person's place, without reading the rest of its RSVPs.
    Index("ix_rsvps_event_id_status_queue_no", "event_id", "status", "queue_no"),
)

comments = Table(
    "comments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("event_id", ID, nullable=False),
    Column("author_id", USER_ID),  # null: the author deleted their account ("a deleted member")
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # An event's comments, oldest first, paged by (created_at, id).
    Index("ix_comments_event_id_created_at", "event_id", "created_at", "id"),
    # A deleted account's comments, found without a scan to blank their author.
    Index("ix_comments_author_id", "author_id"),
)

# Secret calendar feed URLs, one per person. GET /api/calendar/me shows the URL again whenever asked, so the token
# itself is kept (it reads one person's going-list, nothing more); revoking deletes the row.
calendar_feeds = Table(
    "calendar_feeds",
    metadata,
    Column("user_id", USER_ID, primary_key=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Read model of the groups service's groups (group.created / updated / deleted).
group_summaries = Table(
    "group_summaries",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("slug", String(60), nullable=False),
    Column("name", String(100), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("topics", Json, nullable=False),
    Column("city", String(100)),
    Column("lat", Double),
    Column("lng", Double),
    # A tombstone: the group is gone, and a late group.updated must not bring it back.
    Column("deleted_at", UtcDateTime()),
    # When the kept state was the group's (the message's created_at / updated_at): an older message arriving late
    # (replayed from the dead-letter topic after a newer one) is not applied. None: kept before it was recorded.
    Column("updated_at", UtcDateTime()),
)

# One row per topic of a group (from the group summaries): `?topic=` is an indexed lookup, not a scan of JSON.
group_topics = Table(
    "group_topics",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("topic", String(50), primary_key=True),
    Index("ix_group_topics_topic", "topic", "group_id"),
)

# Read model of the users service's profiles (user.profile_updated / user.deleted): attendee lists need no call.
profiles = Table(
    "profiles",
    metadata,
    Column("user_id", USER_ID, primary_key=True),
    Column("display_name", String(80)),
    Column("avatar", Json),
    Column("updated_at", UtcDateTime(), nullable=False),
    # A tombstone: a profile update that arrives after the deletion must not bring the person back.
    Column("deleted_at", UtcDateTime()),
)

# Read model of the groups service's memberships and roles (membership.* events): authorization without a call.
group_members = Table(
    "group_members",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("role", String(32), nullable=False),
    Index("ix_group_members_user_id", "user_id"),
)
