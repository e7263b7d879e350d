"""Stores of the groups service: the queries that need SQL (locking, keyset pages, the nearby and text search),
the read views of member lists, and the unit of work."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from gatherly.contracts.users import ImageVariants, UserProfileUpdated
from gatherly.groups.domain import (
    LEADER_ROLES,
    MANAGER_ROLES,
    Answer,
    Deletion,
    DeletionStatus,
    DeletionStep,
    Group,
    GroupCard,
    GroupDetails,
    GroupId,
    GroupSearch,
    GroupSort,
    Invitation,
    JoinPolicy,
    Location,
    Relation,
    Role,
    Tenure,
    UserId,
    Visibility,
    looks_like_id,
    name_key,
    pick_slug,
    search_text,
)
from gatherly.groups.tables import (
    GROUP_ID,
    banner_images,
    bans,
    group_topics,
    groups,
    invitations,
    join_requests,
    known_people,
    member_profiles,
    memberships,
)
from gatherly.kernel import postgis, sqlite_geo
from gatherly.kernel.addresses import address_hash
from gatherly.kernel.db import Database, Executor, rowcount
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.exports import rows
from gatherly.kernel.fixed_reads import FixedRead, FixedWrite, RawRows
from gatherly.kernel.geo import BoundingBox, bounding_box, distances_km
from gatherly.kernel.read_models import ReadyImageStore, variants_json
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.sagas import SagaState, SagaStore
from gatherly.kernel.uow import UnitOfWork
from gatherly.kernel.web import Listed, cursor_int, cursor_time

# Statements on the request path, built once: no per-call construction or cache-key work in SQLAlchemy.
GROUP_BY_ID = select(groups).where(groups.c.id == bindparam("key"), groups.c.deleted_at.is_(None))
GROUP_BY_SLUG = select(groups).where(groups.c.slug == bindparam("key"), groups.c.deleted_at.is_(None))
# One round trip: membership, request and ban are three small primary-key lookups.
_GROUP_ID: BindParameter[str] = bindparam("group_id")
_USER_ID: BindParameter[str] = bindparam("user_id")
RELATION = select(
    select(memberships.c.role)
    .where(memberships.c.group_id == _GROUP_ID, memberships.c.user_id == _USER_ID)
    .scalar_subquery(),
    select(join_requests.c.user_id)
    .where(join_requests.c.group_id == _GROUP_ID, join_requests.c.user_id == _USER_ID)
    .exists(),
    select(bans.c.user_id).where(bans.c.group_id == _GROUP_ID, bans.c.user_id == _USER_ID).exists(),
)
# Banner variants of groups: a ready image uploaded by a current leader of the group.
LEADERS_BANNERS = (
    select(memberships.c.group_id, banner_images.c.image_id, banner_images.c.variants)
    .join(banner_images, banner_images.c.owner_id == memberships.c.user_id)
    .where(
        memberships.c.group_id.in_(bindparam("groups", expanding=True)),
        memberships.c.role.in_([r.value for r in LEADER_ROLES]),
        banner_images.c.image_id.in_(bindparam("images", expanding=True)),
    )
)

FIND_BY_ID = FixedRead(GROUP_BY_ID)
FIND_BY_SLUG = FixedRead(GROUP_BY_SLUG)
FIND_RELATION = FixedRead(RELATION)
FIND_BANNERS = FixedRead(LEADERS_BANNERS)

# A group's edit (PATCH, its hottest write): the locked read, the row's UPDATE and its topics, built once and run on
# sqlite3 directly inside the write transaction on inline SQLite (FixedWrite; SQLAlchemy's path elsewhere, where
# PostgreSQL takes the row lock). Built per call through SQLAlchemy they were most of the edit's own CPU.
LOCK_BY_ID = FixedWrite(GROUP_BY_ID.with_for_update())
LOCK_BY_SLUG = FixedWrite(GROUP_BY_SLUG.with_for_update())
DETAIL_COLUMNS = (
    "name",
    "name_key",
    "description",
    "search_text",
    "topics",
    "city",
    "lat",
    "lng",
    "visibility",
    "join_policy",
    "questions",
    "banner_image_id",
)
SAVE_GROUP = FixedWrite(
    update(groups)
    .where(groups.c.id == bindparam("group_id"))
    .values({name: bindparam(name) for name in (*DETAIL_COLUMNS, "updated_at")})
)
CLEAR_TOPICS = FixedWrite(delete(group_topics).where(group_topics.c.group_id == bindparam("group_id")))
ADD_TOPIC = FixedWrite(insert(group_topics).values(group_id=bindparam("group_id"), topic=bindparam("topic")))

ROLE_RANK = case({role.value: role.rank for role in Role}, value=memberships.c.role, else_=0)


def _group(row: Mapping[Any, Any]) -> Group:
    location = Location(row["lat"], row["lng"]) if row["lat"] is not None and row["lng"] is not None else None
    return Group(
        id=GroupId(row["id"]),
        slug=row["slug"],
        details=GroupDetails(
            name=row["name"],
            description=row["description"],
            topics=tuple(row["topics"]),
            city=row["city"],
            location=location,
            visibility=Visibility(row["visibility"]),
            join_policy=JoinPolicy(row["join_policy"]),
            questions=tuple(row["questions"]),
            banner_image_id=row["banner_image_id"],
        ),
        member_count=row["member_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


# What a list reads of a group: its card's columns and the sort keys of its cursor. Not the description, search text,
# questions nor the other dates: converting them (JSON, datetimes) was a third of the rows' cost in a page of 20.
# SHOWN_COLUMNS, what a card shows, are all that nearest first reads (its cursor is the distance): the sort keys
# (name_key, created_at: a time parsed a row) are not read, let alone converted.
SHOWN_COLUMNS = (
    groups.c.id,
    groups.c.slug,
    groups.c.name,
    groups.c.topics,
    groups.c.city,
    groups.c.lat,
    groups.c.lng,
    groups.c.visibility,
    groups.c.join_policy,
    groups.c.banner_image_id,
    groups.c.member_count,
)
LISTED_COLUMNS = (*SHOWN_COLUMNS, groups.c.name_key, groups.c.created_at)


# A listed group's enums by their stored value: a dict lookup gives the same member as calling the enum (EnumMeta's
# __call__, ~1-3 us each; two a row, forty a page).
VISIBILITIES = {member.value: member for member in Visibility}
JOIN_POLICIES = {member.value: member for member in JoinPolicy}


LISTED_KEYS = tuple(column.key for column in LISTED_COLUMNS)
# Where a column selected after the card's is in a row of values: member=me's first page's total, after
# LISTED_COLUMNS; nearest first's distance, after SHOWN_COLUMNS.
TOTAL_AT = len(LISTED_COLUMNS)
DISTANCE_AT = SHOWN = len(SHOWN_COLUMNS)
_LISTED_VALUES = itemgetter(*LISTED_KEYS)


# A group as a list shows it: GroupSummary's fields in its order, as plain values, which api.py hands to orjson
# (schemas.groups_page_json): a list's read view, made straight from a row's values. A page of twenty made a
# GroupCard, a Location, a Found and a ListedGroup per row before the API's dict of the card (~4 µs a row); now the
# dict alone. test_list_json.py pins it, by hypothesis over stored rows, to what GroupsPage writes of `api._summary`
# of the group's own card (`Group.card()`, what the group's page shows).
BANNER_AT = [column.key for column in SHOWN_COLUMNS].index("banner_image_id")


def _listed(values: Sequence[Any], distance_km: float | None) -> Listed:
    """The group whose row starts with SHOWN_COLUMNS' values (`FixedRead.values`) as a list shows it, `distance_km`
    rounded as the API shows it, the banner None until `_banners_shown` sets it."""
    group_id, slug, name, topics, city, lat, lng, visibility, join_policy, _, members = values[:SHOWN]
    return {
        "id": group_id,
        "slug": slug,
        "name": name,
        "city": city,
        "location": {"lat": lat, "lng": lng} if lat is not None and lng is not None else None,
        "topics": topics,  # the row's own list (JSON), as the card's tuple would be written
        "member_count": members,
        "visibility": VISIBILITIES[visibility],
        "join_policy": JOIN_POLICIES[join_policy],
        "banner": None,
        "distance_km": round(distance_km, 3) if distance_km is not None else None,
    }


def _detail_columns(details: GroupDetails) -> dict[str, Any]:
    return {
        "name": details.name,
        "name_key": name_key(details.name),
        "description": details.description,
        "search_text": search_text(details),
        "topics": list(details.topics),
        "city": details.city,
        "lat": details.location.lat if details.location else None,
        "lng": details.location.lng if details.location else None,
        "visibility": details.visibility.value,
        "join_policy": details.join_policy.value,
        "questions": list(details.questions),
        "banner_image_id": details.banner_image_id,
    }


LIVE = groups.c.deleted_at.is_(None)

# The SQLite text index (migration 0002): an FTS5 trigram table, its rows tied to groups by group_search_ids.
# A phrase query of the case-folded text matches where search_text contains it, as the LIKE does.
TRIGRAM = 3
INDEXED_MATCHES_AT_MOST = 2000
COUNT_TEXT_MATCHES = text(
    "SELECT count(*) FROM (SELECT rowid FROM groups_search WHERE groups_search MATCH :phrase LIMIT :cap)"
)
TEXT_MATCHES = text(
    "SELECT group_search_ids.group_id FROM groups_search"
    " JOIN group_search_ids ON group_search_ids.rowid = groups_search.rowid"
    " WHERE groups_search MATCH :phrase"
).columns(group_id=GROUP_ID)


def _dialect_of(executor: Executor) -> str:
    dialect = executor.dialect if isinstance(executor, AsyncConnection) else executor.get_bind().dialect
    return str(dialect.name)


class GroupStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def find(self, id_or_slug: str) -> Group | None:
        """A group that is not deleted, by id or by slug (slugs never look like ids)."""
        query = FIND_BY_ID if looks_like_id(id_or_slug) else FIND_BY_SLUG
        row = await query.first(self.session, {"key": id_or_slug})
        return _group(row) if row else None

    async def find_for_update(self, id_or_slug: str) -> Group | None:
        """The group row locked until the transaction ends (PostgreSQL; SQLite holds the whole write lock
        already): membership counts and "is there another organizer" are decided under this lock, so two
        concurrent joins or two organizers leaving at once cannot both see stale numbers."""
        query = LOCK_BY_ID if looks_like_id(id_or_slug) else LOCK_BY_SLUG
        row = await query.first(self.session, {"key": id_or_slug})
        return _group(row) if row else None

    async def add(self, group: Group, slug_base: str) -> Group:
        """Insert with the first free slug of `slug_base`. Slugs of deleted groups stay taken, so an old link
        never leads to a different group. A concurrent insert of the same slug (PostgreSQL) fails the unique
        constraint inside a savepoint and the next free slug is tried."""
        for _ in range(10):
            taken = await self.session.scalars(
                select(groups.c.slug).where(or_(groups.c.slug == slug_base, groups.c.slug.startswith(slug_base + "-")))
            )
            slug = pick_slug(slug_base, taken)
            try:
                async with self.session.begin_nested():
                    await self.session.execute(
                        insert(groups).values(
                            id=group.id,
                            slug=slug,
                            member_count=group.member_count,
                            created_at=group.created_at,
                            updated_at=group.updated_at,
                            **_detail_columns(group.details),
                        )
                    )
            except IntegrityError:
                continue
            await self._set_topics(group.id, group.details.topics)
            return Group(group.id, slug, group.details, group.member_count, group.created_at, group.updated_at)
        raise RuntimeError(f"no free slug for {slug_base!r} after 10 attempts")

    async def save(self, group: Group, *, topics_before: Sequence[str] | None = None) -> None:
        """Write the group's details. Its topic rows are written again unless they are `topics_before` (what the
        row held when read in this transaction): most edits leave the topics alone, and deleting and inserting the
        same rows cost statements and pages written at the commit."""
        await SAVE_GROUP.execute(
            self.session, {"group_id": group.id, "updated_at": group.updated_at, **_detail_columns(group.details)}
        )
        if topics_before is None or tuple(topics_before) != tuple(group.details.topics):
            await self._set_topics(group.id, group.details.topics)

    async def _set_topics(self, group_id: GroupId, topics: Sequence[str]) -> None:
        await CLEAR_TOPICS.execute(self.session, {"group_id": group_id})
        for topic in topics:
            await ADD_TOPIC.execute(self.session, {"group_id": group_id, "topic": topic})

    async def adjust_member_count(self, group_id: GroupId, delta: int) -> None:
        """Adjust the member count in the same transaction as the membership change (under the row lock)."""
        await self.session.execute(
            update(groups).where(groups.c.id == group_id).values(member_count=groups.c.member_count + delta)
        )

    async def mark_deleted(self, group_id: GroupId, now: datetime) -> None:
        """The row stays as a tombstone (its slug stays taken); the group has no members any more."""
        await self.session.execute(
            update(groups).where(groups.c.id == group_id).values(deleted_at=now, updated_at=now, member_count=0)
        )

    async def search(self, criteria: GroupSearch, limit: int, after: dict[str, Any] | None) -> tuple[list[Listed], Any]:
        """A page of groups in `criteria.sort` order, as a list shows them (`Listed`, their banners included), and
        the position after it (None on the last page). Every order ends with the id, so ties (same size, same
        name) never repeat or skip a group across pages.

        Each shape of search (which filters, which order, first page or not) is one statement with bind parameters,
        built and compiled once (`_shaped`) and run as a FixedRead; only PostGIS's nearby search is built per call."""
        if after is not None and _cursor_sort(after) is not criteria.sort:
            raise InvalidInput("The cursor belongs to a different search.", field="cursor")
        where = await self._where(criteria)
        if criteria.near is not None and _dialect_of(self.session) == "postgresql":
            return await self._near_postgis(criteria, criteria.near, where, limit, after)
        distances: dict[str, float] = {}
        if criteria.near is not None:
            if criteria.sort is GroupSort.DISTANCE:
                return await self._nearest(criteria, criteria.near, where, limit, after)
            distances = await self._within(criteria, criteria.near, where)
            where = _Where([AMONG_NEAR_IDS], {"near_ids": _id_list(distances)}, ("near",))
        params = {**where.params, **_rank_params(criteria), "limit": limit + 1}
        if after is not None:
            params.update(_sort_position(criteria.sort, after))
        read = _shaped(
            ("page", criteria.sort, after is not None, *where.shape),
            lambda: _page_query(criteria.sort, where, after is not None),
            unconverted=UNSHOWN_TIME,
        )
        found = await read.raw(self.session, params)
        page = found.convert_values(found.raws[:limit])
        listed = [_listed(row, distances.get(row[0])) for row in page]
        return await self._with_banners(listed, page), _position_after(criteria.sort, found, limit)

    async def first_page_with_total(self, criteria: GroupSearch, limit: int) -> tuple[list[Listed], Any, int]:
        """The first page of a search without `near`, and how many groups it finds in all, in one statement: the
        page's, with `count`'s statement as a subquery (run once), instead of a second statement. Next pages count
        apart as before (`count`); so do nearby searches (their total counts the groups within the radius)."""
        if criteria.near is not None:
            raise ValueError("a nearby search's total is count()'s")
        where = await self._where(criteria)
        read = _shaped(
            ("page", criteria.sort, False, "total", *where.shape),
            lambda: _page_query(criteria.sort, where, after=False, total=True),
            unconverted=UNSHOWN_TIME,
        )
        found = await read.raw(self.session, {**where.params, **_rank_params(criteria), "limit": limit + 1})
        page = found.convert_values(found.raws[:limit])
        listed = await self._with_banners([_listed(row, None) for row in page], page)
        return listed, _position_after(criteria.sort, found, limit), int(page[0][TOTAL_AT]) if page else 0

    async def count(self, criteria: GroupSearch) -> int:
        """How many groups the search finds in all (the total of `?member=me`): with `near`, those within the radius,
        as its pages find them (PostGIS's ST_DWithin; on SQLite the bounding box, then the distance as geo.py
        measures it)."""
        where = await self._where(criteria)
        center = criteria.near
        if center is None:
            read = _shaped(
                ("count", *where.shape), lambda: select(func.count()).select_from(groups).where(*where.filters)
            )
            return int(await read.scalar(self.session, where.params) or 0)
        if _dialect_of(self.session) == "postgresql":
            within = postgis.within(postgis.location_of(groups), center, criteria.radius_km)
            query = select(func.count()).select_from(groups).where(*where.filters, within)
            return int(await self.session.scalar(query, where.params) or 0)
        box = bounding_box(center, criteria.radius_km)
        ranges = len(box.lng_ranges)

        def build() -> Any:
            distance = sqlite_geo.distance_km(groups.c.lat, groups.c.lng)
            within = distance <= bindparam("radius_km", type_=Float)
            return select(func.count()).select_from(groups).where(*where.filters, *_in_box(ranges), within)

        params = {**where.params, **_box_params(box), **sqlite_geo.center_params(center)}
        read = _shaped(("count within", ranges, *where.shape), build)
        return int(await read.scalar(self.session, {**params, "radius_km": criteria.radius_km}) or 0)

    async def _near_postgis(
        self, criteria: GroupSearch, center: Location, where: _Where, limit: int, after: dict[str, Any] | None
    ) -> tuple[list[Listed], Any]:
        location = postgis.location_of(groups)
        filters = [*where.filters, postgis.within(location, center, criteria.radius_km)]
        distance_m = postgis.nearest_first(location, center)
        if criteria.sort is GroupSort.DISTANCE:
            return await self._nearest_postgis(filters, where.params, location, center, limit, after)
        columns = (*LISTED_COLUMNS, distance_m.label("distance_m"), *_ranked(criteria.sort))
        query = select(*columns).where(*filters).order_by(*_ordered(criteria.sort))
        params = {**where.params, **_rank_params(criteria), "limit": limit + 1}
        if after is not None:
            query = query.where(_beyond(criteria.sort))
            params.update(_sort_position(criteria.sort, after))
        rows = list((await self.session.execute(query.limit(bindparam("limit")), params)).mappings())
        values = _values_by_name(rows[:limit])
        listed = [_listed(value, row["distance_m"] / 1000.0) for value, row in zip(values, rows, strict=False)]
        position = _cursor_at(criteria.sort, rows[limit - 1]) if len(rows) > limit else None
        return await self._with_banners(listed, values), position

    async def _within(self, criteria: GroupSearch, center: Location, where: _Where) -> dict[str, float]:
        """Every group within the radius, by id, with its distance. Only (id, lat, lng) of the candidates are read."""
        found = await self._candidates(criteria, center, where, (groups.c.id, groups.c.lat, groups.c.lng))
        candidates = found.convert(found.raws)
        measured = distances_km(center, [(row["lat"], row["lng"]) for row in candidates])
        return {
            str(row["id"]): distance
            for row, distance in zip(candidates, measured, strict=True)
            if distance <= criteria.radius_km
        }

    async def _candidates(
        self, criteria: GroupSearch, center: Location, where: _Where, columns: tuple[Any, ...]
    ) -> RawRows:
        """`columns` of the groups in the radius's bounding box (`_in_box`)."""
        box = bounding_box(center, criteria.radius_km)
        ranges = len(box.lng_ranges)
        read = _shaped(
            ("within", len(columns), ranges, *where.shape),
            lambda: select(*columns).where(*where.filters, *_in_box(ranges)),
        )
        return await read.raw(self.session, {**where.params, **_box_params(box)})

    async def _nearest_postgis(
        self,
        filters: list[ColumnElement[bool]],
        params: dict[str, Any],
        location: ColumnElement[Any],
        center: Location,
        limit: int,
        after: dict[str, Any] | None,
    ) -> tuple[list[Listed], Any]:
        """Nearest first on PostgreSQL: the GiST index yields the groups within the radius in distance order (a KNN
        scan, `<->`, postgis.nearest_page), so a page reads about a page of rows however many groups the radius
        holds."""
        distance_m = postgis.nearest_first(location, center)
        query = select(*LISTED_COLUMNS, distance_m.label(postgis.DISTANCE)).where(*filters).params(**params)
        # In metres as the query gave them (km would not convert back to the same float).
        nearest = None if after is None else _distance_position(after, "m")
        rows = await postgis.nearest_page(
            self.session, query, location=location, center=center, key=groups.c.id, limit=limit, after=nearest
        )
        values = [_LISTED_VALUES(row) for row in rows[:limit]]
        listed = [_listed(value, row[postgis.DISTANCE] / 1000.0) for value, row in zip(values, rows, strict=False)]
        listed = await self._with_banners(listed, values)
        position = None
        if len(rows) > limit:
            last = rows[limit - 1]
            position = {"s": GroupSort.DISTANCE.value, "m": last[postgis.DISTANCE], "i": last["id"]}
        return listed, position

    async def _nearest(
        self, criteria: GroupSearch, center: Location, where: _Where, limit: int, after: dict[str, Any] | None
    ) -> tuple[list[Listed], Any]:
        """Nearest first on SQLite: SQLite measures the groups in the radius's bounding box (sqlite_geo, the floats
        geo.distances_km gives), orders them by (distance, id) and returns the first `limit` + 1, so only those rows'
        values are made Python objects and converted."""
        box = bounding_box(center, criteria.radius_km)
        ranges = len(box.lng_ranges)
        params = {**where.params, **_box_params(box), **sqlite_geo.center_params(center), "limit": limit + 1}
        if after is not None:
            params["last_distance"], params["last_id"] = _distance_position(after, "d")
        read = _shaped(
            ("nearest", ranges, after is not None, *where.shape),
            lambda: _nearest_query(where, ranges, after is not None),
        )
        found = await read.raw(self.session, params)
        # In distance order, the groups within the radius are the first rows: the radius is tested here rather than
        # in the statement, where SQLite would measure every candidate a second time. The distance needs no
        # conversion (a float), so only the page's rows are converted, not the one read to know there is more.
        within = [raw for raw in found.raws if raw[DISTANCE_AT] <= criteria.radius_km]
        page = found.convert_values(within[:limit])
        listed = await self._with_banners([_listed(row, row[DISTANCE_AT]) for row in page], page)
        position = None
        if len(within) > limit:
            last = page[limit - 1]
            position = {"s": GroupSort.DISTANCE.value, "d": last[DISTANCE_AT], "i": last[0]}
        return listed, position

    async def _where(self, criteria: GroupSearch) -> _Where:
        """The search's filters (bind parameters, not values), their values, and the shape they make."""
        where = _Where([LIVE], {}, ())
        if criteria.text:
            where = where.plus(*await self._text_filter(criteria.text.casefold()))
        if criteria.topic:
            where = where.plus(OF_TOPIC, {"topic": criteria.topic}, "topic")
        if criteria.member is not None:
            where = where.plus(OF_MEMBER, {"member": criteria.member}, "member")
        if criteria.pending is not None:
            where = where.plus(OF_PENDING, {"pending": criteria.pending}, "pending")
        return where

    async def _text_filter(self, folded: str) -> tuple[ColumnElement[bool], dict[str, Any], str]:
        """Groups whose name or description contains `folded`.

        On SQLite a selective query goes through the FTS5 trigram index (migration 0002): the matching groups
        are looked up, then ordered. A query matching more than INDEXED_MATCHES_AT_MOST groups is common enough
        that walking the groups newest first and testing each (the LIKE) finds a page sooner than fetching and
        sorting every match. Queries under three characters have no trigram and use the LIKE too. On PostgreSQL
        the LIKE is the query either way: the planner uses the pg_trgm index when it pays off."""
        like = (LIKE_TEXT, {"pattern": _like_escaped(folded)}, "like")
        if len(folded) < TRIGRAM or _dialect_of(self.session) != "sqlite":
            return like
        phrase = '"' + folded.replace('"', '""') + '"'
        matches = await COUNT_MATCHES.scalar(self.session, {"phrase": phrase, "cap": INDEXED_MATCHES_AT_MOST + 1})
        if (matches or 0) > INDEXED_MATCHES_AT_MOST:
            return like
        return INDEXED_TEXT, {"phrase": phrase}, "indexed"

    async def banners(self, shown: Iterable[GroupCard]) -> dict[GroupId, ImageVariants]:
        """Banner variants of these groups: an image that is ready and was uploaded by a current leader of the
        group (anyone could name someone else's image id; it shows only when a leader owns it)."""
        return await self._banners({g.id: g.banner_image_id for g in shown if g.banner_image_id})

    async def _with_banners(self, listed: list[Listed], rows: Sequence[Sequence[Any]]) -> list[Listed]:
        """`listed` with the banners (`banners`) of their groups, whose rows (SHOWN_COLUMNS first) are `rows`."""
        wanted = {row[0]: row[BANNER_AT] for row in rows if row[BANNER_AT]}
        return _banners_shown(listed, await self._banners(wanted)) if wanted else listed

    async def _banners(self, wanted: dict[GroupId, str]) -> dict[GroupId, ImageVariants]:
        if not wanted:
            return {}
        found = await FIND_BANNERS.rows(self.session, {"groups": list(wanted), "images": list(wanted.values())})
        return {
            GroupId(row["group_id"]): ImageVariants(**row["variants"])
            for row in found
            if wanted.get(GroupId(row["group_id"])) == row["image_id"]
        }


# Each keyset order: its key column, whether it runs high to low, and the key of a row for the cursor.
_SORTS: dict[GroupSort, tuple[Any, bool, Any]] = {
    GroupSort.NEWEST: (groups.c.created_at, True, lambda row: row["created_at"].isoformat()),
    GroupSort.MEMBERS: (groups.c.member_count, True, lambda row: row["member_count"]),
    GroupSort.NAME: (groups.c.name_key, False, lambda row: row["name_key"]),
}


@dataclass(frozen=True)
class _Where:
    """A search's filters, the values of their bind parameters, and the shape they make (a key of `_shaped`)."""

    filters: list[ColumnElement[bool]]
    params: dict[str, Any]
    shape: tuple[str, ...]

    def plus(self, condition: ColumnElement[bool], params: dict[str, Any], shape: str) -> _Where:
        return _Where([*self.filters, condition], {**self.params, **params}, (*self.shape, shape))


# Statements of every search shape met so far (bounded: the combinations of filters, sorts and first-or-next page).
_SHAPES: dict[tuple[Any, ...], FixedRead] = {}


def _shaped(shape: tuple[Any, ...], build: Any, unconverted: tuple[str, ...] = ()) -> FixedRead:
    read = _SHAPES.get(shape)
    if read is None:
        read = _SHAPES[shape] = FixedRead(build(), unconverted=unconverted)
    return read


# A page's rows leave `created_at` as the driver gave it (FixedRead's `unconverted`; on SQLite text, whose parse was
# ~0.2-0.5 µs a row): no list shows it, and only the cursor of the newest and relevance orders reads it, of the
# page's last row, converted whole by `_position_after`.
UNSHOWN_TIME = (groups.c.created_at.key,)


def _ordered(sort: GroupSort) -> tuple[Any, ...]:
    """The ORDER BY of a sort: its key, then the id (relevance: its rank, then newest first, then the id)."""
    if sort is GroupSort.RELEVANCE:
        return RELEVANCE_RANK.asc(), groups.c.created_at.desc(), groups.c.id.desc()
    key, descending, _ = _SORTS[sort]
    return (key.desc(), groups.c.id.desc()) if descending else (key.asc(), groups.c.id.asc())


def _ranked(sort: GroupSort) -> tuple[Any, ...]:
    """The columns a sort reads beside the card's for its cursor: relevance's rank (a row's last value)."""
    return (RELEVANCE_RANK.label(RANK),) if sort is GroupSort.RELEVANCE else ()


def _beyond(sort: GroupSort) -> ColumnElement[bool]:
    """Rows after the cursor's (key, id) in the sort's order (relevance: after its (rank, created_at, id))."""
    if sort is GroupSort.RELEVANCE:
        rank, last_rank = RELEVANCE_RANK, bindparam("last_rank", type_=Integer)
        return or_(rank > last_rank, and_(rank == last_rank, _beyond(GroupSort.NEWEST)))
    key, descending, _ = _SORTS[sort]
    since, last_id = bindparam("since", type_=key.type), bindparam("last_id", type_=groups.c.id.type)
    if descending:
        return or_(key < since, and_(key == since, groups.c.id < last_id))
    return or_(key > since, and_(key == since, groups.c.id > last_id))


def _page_query(sort: GroupSort, where: _Where, after: bool, total: bool = False) -> Any:
    # The total as an uncorrelated subquery: run once per statement, on SQLite cheaper than COUNT(*) OVER (),
    # which copies every match into a window buffer (~150 against ~125 us for 41 matches, page and count apart).
    counted = (
        select(func.count()).select_from(groups).where(*where.filters).scalar_subquery().correlate(None).label("total")
    )
    columns = (*LISTED_COLUMNS, *([counted] if total else []), *_ranked(sort))
    query = select(*columns).where(*where.filters).order_by(*_ordered(sort))
    if after:
        query = query.where(_beyond(sort))
    return query.limit(bindparam("limit"))


def _in_box(ranges: int) -> list[ColumnElement[bool]]:
    """Within a radius's bounding box (geo.bounding_box, bound by `_box_params`): an indexed range on lat and a cheap
    check on lng, a superset of the groups within the radius (the box's corners are farther), left to the exact
    great-circle distance. `ranges`: the box's longitude ranges (two across the antimeridian)."""
    in_lng = or_(*(groups.c.lng.between(bindparam(f"west_{i}"), bindparam(f"east_{i}")) for i in range(ranges)))
    return [groups.c.lat.between(bindparam("south"), bindparam("north")), in_lng]


def _box_params(box: BoundingBox) -> dict[str, float]:
    params = {"south": box.min_lat, "north": box.max_lat}
    for i, (west, east) in enumerate(box.lng_ranges):
        params[f"west_{i}"], params[f"east_{i}"] = west, east
    return params


DISTANCE_KM = "distance_km"


def _nearest_query(where: _Where, ranges: int, after: bool) -> Any:
    """The groups in the bounding box nearest first, by id among equals (bind parameters: the box's, the centre's
    (sqlite_geo.center_params), `limit`, and after a cursor `last_distance` and `last_id`)."""
    distance = sqlite_geo.distance_km(groups.c.lat, groups.c.lng)
    measured = distance.label(DISTANCE_KM)
    query = select(*SHOWN_COLUMNS, measured).where(*where.filters, *_in_box(ranges))
    if after:
        last_distance = bindparam("last_distance", type_=Float)
        query = query.where(
            or_(distance > last_distance, and_(distance == last_distance, groups.c.id > bindparam("last_id")))
        )
    return query.order_by(measured, groups.c.id).limit(bindparam("limit"))


def _banners_shown(listed: list[Listed], banners: Mapping[GroupId, ImageVariants]) -> list[Listed]:
    """`listed` with the banners of their groups (by group id) as a list shows them."""
    for group in listed:
        if (banner := banners.get(group["id"])) is not None:
            group["banner"] = variants_json(banner)
    return listed


def _values_by_name(rows: Sequence[Mapping[Any, Any]]) -> list[Sequence[Any]]:
    """Rows read by name as `FixedRead.values` gives the page's statement's: LISTED_COLUMNS' values (other columns are
    left out)."""
    return [_LISTED_VALUES(row) for row in rows]


def _position_after(sort: GroupSort, found: RawRows, limit: int) -> Any:
    """The cursor after a page of `limit` of the rows found (the page's statement's), when there is more (None on the
    last page): of the page's last row, converted whole (the page's values leave its time unconverted)."""
    if len(found.raws) <= limit:
        return None
    (last,) = found.convert(found.raws[limit - 1 : limit])
    return _cursor_at(sort, last)


def _cursor_at(sort: GroupSort, last: Mapping[Any, Any]) -> dict[str, Any]:
    """The position after a page whose last row, read by name, is `last`: the sort, the row's sort key and id
    (relevance's key is newest's, after its rank)."""
    key = _SORTS[GroupSort.NEWEST if sort is GroupSort.RELEVANCE else sort][2]
    position = {"s": sort.value, "k": key(last), "i": last["id"]}
    if sort is GroupSort.RELEVANCE:
        position["r"] = int(last[RANK])
    return position


def _like_escaped(text: str) -> str:
    """`text` as a LIKE pattern matching it literally (what SQLAlchemy's `contains(..., autoescape=True)` binds)."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


# The filters of a search, built once (their values are bind parameters): built per search, they were a tenth of a
# `member=me` list's profile, for a statement already compiled for its shape.
OF_TOPIC = groups.c.id.in_(select(group_topics.c.group_id).where(group_topics.c.topic == bindparam("topic")))
# The caller's groups as a join with their memberships (one a group: the primary key is (group, user)), not an IN
# list: SQLite filled a temporary table with the list's ids before looking each group up, which made `member=me`'s
# page and total ~145 us against ~100 for 41 groups (sqlite3 alone); the plan still starts from the person's index.
OF_MEMBER = and_(memberships.c.user_id == bindparam("member"), memberships.c.group_id == groups.c.id)
# `pending=me` the same way, with the caller's join requests (one a group: the primary key is (group, user)).
OF_PENDING = and_(join_requests.c.user_id == bindparam("pending"), join_requests.c.group_id == groups.c.id)


# A list of ids in one bound JSON array (SQLite's json_each; these reads are the SQLite nearby search's only): an
# expanding IN list was rendered anew per call by SQLAlchemy (~0.1 ms for 20 ids, more than running the statement).
def _among(ids_param: str) -> Any:
    """groups.id among the JSON array bound as `ids_param`."""
    return groups.c.id.in_(select(func.json_each(bindparam(ids_param, type_=String)).table_valued("value")))


AMONG_NEAR_IDS = _among("near_ids")

# sort=relevance's rank: 0 the name starts with the query, 1 the name contains it (also where a word of the name
# starts with it), 2 the rest the text filter found (the description). `name_pattern` is the query folded as the
# text filter folds it (`_rank_params`) against `name_key`, the name folded in Python the same way: an integer both
# databases compute alike, so both order alike (FTS5's bm25 and PostgreSQL's ts_rank differ, and are floats).
# Computed per match, as every order of a text search but newest sorts all matches; no index serves it.
_NAME_PATTERN = bindparam("name_pattern", type_=String)
RANKS = (0, 1, 2)
RELEVANCE_RANK = case(
    (groups.c.name_key.startswith(_NAME_PATTERN, escape="/"), literal_column("0", Integer)),
    (groups.c.name_key.contains(_NAME_PATTERN, escape="/"), literal_column("1", Integer)),
    else_=literal_column("2", Integer),
)
RANK = "relevance_rank"


def _rank_params(criteria: GroupSearch) -> dict[str, Any]:
    """The bind parameter of relevance's rank (none for the other sorts): the folded query as a literal pattern."""
    if criteria.sort is not GroupSort.RELEVANCE or not criteria.text:
        return {}
    return {"name_pattern": _like_escaped(criteria.text.casefold())}


LIKE_TEXT = groups.c.search_text.contains(bindparam("pattern"), escape="/")
INDEXED_TEXT = groups.c.id.in_(TEXT_MATCHES.bindparams(bindparam("phrase", type_=String)))
COUNT_MATCHES = FixedRead(COUNT_TEXT_MATCHES.columns(column("count", Integer)))


def _id_list(ids: Iterable[str]) -> str:
    """Ids as the JSON array `json_each` reads (AMONG_NEAR_IDS)."""
    return json.dumps(list(ids))


def _cursor_sort(after: dict[str, Any]) -> GroupSort | None:
    """The order a cursor was made in (cursors of `nearest`, distance's former name, included), None if none."""
    sort = after.get("s")
    try:
        return GroupSort(sort) if isinstance(sort, str) else None
    except ValueError:
        return None


def _sort_position(sort: GroupSort, after: dict[str, Any]) -> dict[str, Any]:
    """The bind parameters of `_beyond` a cursor of this sort carries: its (key, id) as `since` and `last_id`, checked
    to be of the key's type (relevance: its rank as `last_rank` too, then newest's key)."""
    if sort is GroupSort.RELEVANCE:
        (rank,) = _position(after, ("r",))
        if type(rank) is not int or rank not in RANKS:
            raise InvalidInput("The cursor is not one this API issued.", field="cursor")
        return {"last_rank": rank, **_sort_position(GroupSort.NEWEST, after)}
    key, last_id = _position(after, ("k", "i"))
    if not isinstance(last_id, str):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    if sort is GroupSort.NEWEST:
        try:
            return {"since": cursor_time(key), "last_id": last_id}
        except (TypeError, ValueError):
            raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    expected = int if sort is GroupSort.MEMBERS else str
    if not isinstance(key, expected) or isinstance(key, bool):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    return {"since": key, "last_id": last_id}


def _distance_position(after: dict[str, Any], key: str) -> tuple[float, str]:
    last_distance, last_id = _position(after, (key, "i"))
    if not isinstance(last_distance, int | float) or isinstance(last_distance, bool) or not isinstance(last_id, str):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    return float(last_distance), last_id


def _position(after: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    if any(key not in after for key in keys):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    return tuple(after[key] for key in keys)


@dataclass(frozen=True)
class MemberView:
    user_id: UserId
    display_name: str | None
    avatar: ImageVariants | None
    role: Role
    joined_at: datetime


@dataclass(frozen=True)
class MyRequestView:
    group_id: GroupId
    slug: str
    group_name: str
    answers: tuple[Answer, ...]
    requested_at: datetime


@dataclass(frozen=True)
class BanView:
    user_id: UserId
    display_name: str | None
    banned_by: UserId
    banned_by_name: str | None
    banned_at: datetime


@dataclass(frozen=True)
class RequestView:
    user_id: UserId
    display_name: str | None
    avatar: ImageVariants | None
    answers: tuple[Answer, ...]
    requested_at: datetime


def _answers(value: Any) -> tuple[Answer, ...]:
    return tuple(Answer(a["question"], a["answer"]) for a in value)


def _time_position(after: dict[str, Any], id_key: str) -> tuple[datetime, str]:
    """A (time, id) cursor: `t` and `id_key`."""
    try:
        return cursor_time(after["t"]), str(after[id_key])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")


def _avatar(value: Any) -> ImageVariants | None:
    return ImageVariants(**value) if value else None


def _members_of(group_id: GroupId, role: Role | None) -> list[ColumnElement[bool]]:
    where = [memberships.c.group_id == group_id]
    if role is not None:
        where.append(memberships.c.role == role.value)
    return where


def _member_views(*, by_role: bool, after: bool) -> FixedRead:
    """Members of a group (of one role when `by_role`), leaders first (by rank), then by when they joined, with
    their profiles: one statement (bind parameters group_id, role, rank/joined_at/user_id after `after`, limit)."""
    query = (
        select(
            memberships.c.user_id,
            memberships.c.role,
            memberships.c.joined_at,
            member_profiles.c.display_name,
            member_profiles.c.avatar,
        )
        .select_from(memberships.outerjoin(member_profiles, member_profiles.c.user_id == memberships.c.user_id))
        .where(memberships.c.group_id == bindparam("group_id"))
        .order_by(ROLE_RANK.desc(), memberships.c.joined_at, memberships.c.user_id)
    )
    if by_role:
        query = query.where(memberships.c.role == bindparam("role"))
    if after:
        rank = bindparam("rank", type_=Integer)
        joined_at = bindparam("joined_at", type_=memberships.c.joined_at.type)
        query = query.where(
            or_(
                rank > ROLE_RANK,
                and_(
                    rank == ROLE_RANK,
                    or_(
                        memberships.c.joined_at > joined_at,
                        and_(memberships.c.joined_at == joined_at, memberships.c.user_id > bindparam("after_user")),
                    ),
                ),
            )
        )
    return FixedRead(query.limit(bindparam("limit")))


MEMBER_VIEWS = {
    (by_role, after): _member_views(by_role=by_role, after=after)
    for by_role in (False, True)
    for after in (False, True)
}
MEMBER_VIEW = FixedRead(
    _member_views(by_role=False, after=False).statement.where(memberships.c.user_id == bindparam("user_id"))  # type: ignore[attr-defined]
)
COUNT_MEMBERS = {
    by_role: FixedRead(
        select(func.count())
        .select_from(memberships)
        .where(
            memberships.c.group_id == bindparam("group_id"),
            *([memberships.c.role == bindparam("role")] if by_role else []),
        )
    )
    for by_role in (False, True)
}


def _member_view(row: Mapping[str, Any]) -> MemberView:
    return MemberView(
        UserId(row["user_id"]), row["display_name"], _avatar(row["avatar"]), Role(row["role"]), row["joined_at"]
    )


class MembershipStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def relation(self, group_id: GroupId, user_id: str | None) -> Relation:
        """What this person is to the group: member with a role, pending, banned, or nothing."""
        if user_id is None:
            return Relation()
        found = await FIND_RELATION.first(self.session, {"group_id": group_id, "user_id": user_id})
        assert found is not None  # one row of three subqueries
        role, pending, banned = found.values()
        return Relation(role=Role(role) if role else None, pending=bool(pending), banned=bool(banned))

    async def add(self, group_id: GroupId, user_id: str, role: Role, now: datetime) -> None:
        await self.session.execute(
            insert(memberships).values(group_id=group_id, user_id=user_id, role=role.value, joined_at=now)
        )

    async def remove(self, group_id: GroupId, user_id: str) -> bool:
        result = await self.session.execute(
            delete(memberships).where(memberships.c.group_id == group_id, memberships.c.user_id == user_id)
        )
        return rowcount(result) == 1

    async def set_role(self, group_id: GroupId, user_id: str, role: Role) -> None:
        await self.session.execute(
            update(memberships)
            .where(memberships.c.group_id == group_id, memberships.c.user_id == user_id)
            .values(role=role.value)
        )

    async def count_with_role(self, group_id: GroupId, role: Role) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(memberships)
                .where(memberships.c.group_id == group_id, memberships.c.role == role.value)
            )
            or 0
        )

    async def user_ids(self, group_id: GroupId, roles: Sequence[Role] | None = None) -> list[UserId]:
        query = select(memberships.c.user_id).where(memberships.c.group_id == group_id)
        if roles is not None:
            query = query.where(memberships.c.role.in_([r.value for r in roles]))
        return [UserId(u) for u in await self.session.scalars(query.order_by(memberships.c.user_id))]

    async def managers(self, group_id: GroupId) -> list[UserId]:
        return await self.user_ids(group_id, MANAGER_ROLES)

    async def groups_of(self, user_id: str) -> list[GroupId]:
        """The live groups this person belongs to, by id (the order groups are locked in when all are changed)."""
        query = (
            select(memberships.c.group_id)
            .select_from(memberships.join(groups, groups.c.id == memberships.c.group_id))
            .where(memberships.c.user_id == user_id, LIVE)
            .order_by(memberships.c.group_id)
        )
        return [GroupId(g) for g in await self.session.scalars(query)]

    async def tenures(self, group_id: GroupId) -> list[Tenure]:
        query = select(memberships.c.user_id, memberships.c.role, memberships.c.joined_at).where(
            memberships.c.group_id == group_id
        )
        return [Tenure(UserId(row.user_id), Role(row.role), row.joined_at) for row in await self.session.execute(query)]

    async def remove_all(self, group_id: GroupId) -> None:
        await self.session.execute(delete(memberships).where(memberships.c.group_id == group_id))

    async def view(self, group_id: GroupId, user_id: str) -> MemberView | None:
        row = await MEMBER_VIEW.first(self.session, {"group_id": group_id, "user_id": user_id, "limit": 1})
        return _member_view(row) if row else None

    async def page(
        self, group_id: GroupId, limit: int, after: dict[str, Any] | None, role: Role | None = None
    ) -> tuple[list[MemberView], Any]:
        """Members (only those with `role` if given), leaders first (by rank), then by when they joined."""
        params: dict[str, Any] = {"group_id": group_id, "limit": limit + 1}
        if role is not None:
            params["role"] = role.value
        if after is not None:
            try:
                params.update(
                    rank=cursor_int(after["r"]), joined_at=cursor_time(after["j"]), after_user=str(after["u"])
                )
            except (KeyError, TypeError, ValueError):
                raise InvalidInput("The cursor is not one this API issued.", field="cursor")
        rows = await MEMBER_VIEWS[role is not None, after is not None].rows(self.session, params)
        views = [_member_view(row) for row in rows[:limit]]
        position = None
        if len(rows) > limit:
            last = views[-1]
            position = {"r": last.role.rank, "j": last.joined_at.isoformat(), "u": last.user_id}
        return views, position

    async def count(self, group_id: GroupId, role: Role | None = None) -> int:
        params = {"group_id": group_id} if role is None else {"group_id": group_id, "role": role.value}
        return int(await COUNT_MEMBERS[role is not None].scalar(self.session, params) or 0)


class JoinRequestStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, group_id: GroupId, user_id: str, answers: Sequence[Answer], now: datetime) -> None:
        await self.session.execute(
            insert(join_requests).values(
                group_id=group_id,
                user_id=user_id,
                answers=[{"question": a.question, "answer": a.answer} for a in answers],
                requested_at=now,
            )
        )

    async def remove(self, group_id: GroupId, user_id: str) -> bool:
        result = await self.session.execute(
            delete(join_requests).where(join_requests.c.group_id == group_id, join_requests.c.user_id == user_id)
        )
        return rowcount(result) == 1

    async def user_ids(self, group_id: GroupId) -> list[UserId]:
        query = select(join_requests.c.user_id).where(join_requests.c.group_id == group_id)
        return [UserId(u) for u in await self.session.scalars(query.order_by(join_requests.c.user_id))]

    async def remove_all(self, group_id: GroupId) -> None:
        await self.session.execute(delete(join_requests).where(join_requests.c.group_id == group_id))

    async def groups_of(self, user_id: str) -> list[GroupId]:
        """The live groups this person waits to join, by id."""
        query = (
            select(join_requests.c.group_id)
            .select_from(join_requests.join(groups, groups.c.id == join_requests.c.group_id))
            .where(join_requests.c.user_id == user_id, LIVE)
            .order_by(join_requests.c.group_id)
        )
        return [GroupId(g) for g in await self.session.scalars(query)]

    async def count(self, group_id: GroupId) -> int:
        query = select(func.count()).select_from(join_requests).where(join_requests.c.group_id == group_id)
        return int(await self.session.scalar(query) or 0)

    async def count_of(self, user_id: str) -> int:
        query = (
            select(func.count())
            .select_from(join_requests.join(groups, groups.c.id == join_requests.c.group_id))
            .where(join_requests.c.user_id == user_id, LIVE)
        )
        return int(await self.session.scalar(query) or 0)

    async def of_person(
        self, user_id: str, limit: int, after: dict[str, Any] | None
    ) -> tuple[list[MyRequestView], Any]:
        """One person's pending requests, oldest first, with the groups they went to."""
        query = (
            select(
                join_requests.c.group_id,
                join_requests.c.answers,
                join_requests.c.requested_at,
                groups.c.slug,
                groups.c.name,
            )
            .select_from(join_requests.join(groups, groups.c.id == join_requests.c.group_id))
            .where(join_requests.c.user_id == user_id, LIVE)
            .order_by(join_requests.c.requested_at, join_requests.c.group_id)
        )
        if after is not None:
            since, group_id = _time_position(after, "g")
            query = query.where(
                or_(
                    join_requests.c.requested_at > since,
                    and_(join_requests.c.requested_at == since, join_requests.c.group_id > group_id),
                )
            )
        rows = list((await self.session.execute(query.limit(limit + 1))).mappings())
        views = [
            MyRequestView(
                GroupId(row["group_id"]), row["slug"], row["name"], _answers(row["answers"]), row["requested_at"]
            )
            for row in rows[:limit]
        ]
        position = None
        if len(rows) > limit:
            position = {"t": views[-1].requested_at.isoformat(), "g": views[-1].group_id}
        return views, position

    async def page(self, group_id: GroupId, limit: int, after: dict[str, Any] | None) -> tuple[list[RequestView], Any]:
        """Pending requests, oldest first."""
        query = (
            select(
                join_requests.c.user_id,
                join_requests.c.answers,
                join_requests.c.requested_at,
                member_profiles.c.display_name,
                member_profiles.c.avatar,
            )
            .select_from(join_requests.outerjoin(member_profiles, member_profiles.c.user_id == join_requests.c.user_id))
            .where(join_requests.c.group_id == group_id)
            .order_by(join_requests.c.requested_at, join_requests.c.user_id)
        )
        if after is not None:
            since, user_id = _time_position(after, "u")
            query = query.where(
                or_(
                    join_requests.c.requested_at > since,
                    and_(join_requests.c.requested_at == since, join_requests.c.user_id > user_id),
                )
            )
        rows = list((await self.session.execute(query.limit(limit + 1))).mappings())
        views = [
            RequestView(
                UserId(row["user_id"]),
                row["display_name"],
                _avatar(row["avatar"]),
                _answers(row["answers"]),
                row["requested_at"],
            )
            for row in rows[:limit]
        ]
        position = None
        if len(rows) > limit:
            position = {"t": views[-1].requested_at.isoformat(), "u": views[-1].user_id}
        return views, position


class BanStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, group_id: GroupId, user_id: str, banned_by: str, now: datetime) -> None:
        exists = await self.session.scalar(
            select(func.count()).select_from(bans).where(bans.c.group_id == group_id, bans.c.user_id == user_id)
        )
        if not exists:
            await self.session.execute(
                insert(bans).values(group_id=group_id, user_id=user_id, banned_by=banned_by, banned_at=now)
            )

    async def remove(self, group_id: GroupId, user_id: str) -> bool:
        result = await self.session.execute(delete(bans).where(bans.c.group_id == group_id, bans.c.user_id == user_id))
        return rowcount(result) == 1

    async def remove_all(self, group_id: GroupId) -> None:
        await self.session.execute(delete(bans).where(bans.c.group_id == group_id))

    async def remove_all_of(self, user_id: str) -> list[GroupId]:
        """Every ban of this person ends; returns the groups that had banned them."""
        result = await self.session.execute(delete(bans).where(bans.c.user_id == user_id).returning(bans.c.group_id))
        return [GroupId(group_id) for group_id in result.scalars()]

    async def count(self, group_id: GroupId) -> int:
        query = select(func.count()).select_from(bans).where(bans.c.group_id == group_id)
        return int(await self.session.scalar(query) or 0)

    async def page(self, group_id: GroupId, limit: int, after: dict[str, Any] | None) -> tuple[list[BanView], Any]:
        """Bans, newest first, with the names of the banned person and of who banned them."""
        banned, banner = member_profiles.alias("banned"), member_profiles.alias("banner")
        query = (
            select(
                bans.c.user_id,
                bans.c.banned_by,
                bans.c.banned_at,
                banned.c.display_name,
                banner.c.display_name.label("banned_by_name"),
            )
            .select_from(
                bans.outerjoin(banned, banned.c.user_id == bans.c.user_id).outerjoin(
                    banner, banner.c.user_id == bans.c.banned_by
                )
            )
            .where(bans.c.group_id == group_id)
            .order_by(bans.c.banned_at.desc(), bans.c.user_id.desc())
        )
        if after is not None:
            since, user_id = _time_position(after, "u")
            query = query.where(
                or_(bans.c.banned_at < since, and_(bans.c.banned_at == since, bans.c.user_id < user_id))
            )
        rows = list((await self.session.execute(query.limit(limit + 1))).mappings())
        views = [
            BanView(
                UserId(row["user_id"]),
                row["display_name"],
                UserId(row["banned_by"]),
                row["banned_by_name"],
                row["banned_at"],
            )
            for row in rows[:limit]
        ]
        position = None
        if len(rows) > limit:
            position = {"t": views[-1].banned_at.isoformat(), "u": views[-1].user_id}
        return views, position


class KnownPeopleStore:
    """Everyone a group has seen (see tables.known_people): who may be banned."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, group_id: GroupId, user_id: str, now: datetime) -> None:
        if not await self.knows(group_id, user_id):
            await self.session.execute(
                insert(known_people).values(group_id=group_id, user_id=user_id, first_seen_at=now)
            )

    async def knows(self, group_id: GroupId, user_id: str) -> bool:
        query = select(known_people.c.user_id).where(
            known_people.c.group_id == group_id, known_people.c.user_id == user_id
        )
        return (await self.session.scalar(query)) is not None

    async def remove_all(self, group_id: GroupId) -> None:
        await self.session.execute(delete(known_people).where(known_people.c.group_id == group_id))

    async def forget(self, user_id: str) -> None:
        """No group has seen this person any more (their account was deleted)."""
        await self.session.execute(delete(known_people).where(known_people.c.user_id == user_id))


def _invitation(row: RowMapping) -> Invitation:
    return Invitation(
        id=row["id"],
        group_id=GroupId(row["group_id"]),
        created_by=UserId(row["created_by"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        email=row["email"],
        revoked_at=row["revoked_at"],
        redacted_at=row["redacted_at"],
    )


class InvitationStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, invitation: Invitation, token_hash: str) -> None:
        await self.session.execute(
            insert(invitations).values(
                id=invitation.id,
                group_id=invitation.group_id,
                token_hash=token_hash,
                created_by=invitation.created_by,
                email=invitation.email,
                email_hash=address_hash(invitation.email) if invitation.email is not None else None,
                max_uses=invitation.max_uses,
                uses=invitation.uses,
                created_at=invitation.created_at,
                expires_at=invitation.expires_at,
                revoked_at=invitation.revoked_at,
            )
        )

    async def by_token(self, group_id: GroupId, token_hash: str) -> Invitation | None:
        """The group's invitation with this token (another group's token is as unknown as a made-up one)."""
        query = select(invitations).where(invitations.c.group_id == group_id, invitations.c.token_hash == token_hash)
        row = (await self.session.execute(query)).mappings().first()
        return _invitation(row) if row else None

    async def count_use(self, invitation_id: str) -> None:
        """One more use (under the group's row lock: two people taking the last use cannot both get it)."""
        await self.session.execute(
            update(invitations).where(invitations.c.id == invitation_id).values(uses=invitations.c.uses + 1)
        )

    async def revoke(self, group_id: GroupId, invitation_id: str, now: datetime) -> bool:
        """False when the group has no such invitation; revoking twice changes nothing."""
        found = await self.session.scalar(
            select(invitations.c.revoked_at.is_(None)).where(
                invitations.c.group_id == group_id, invitations.c.id == invitation_id
            )
        )
        if found is None:
            return False
        await self.session.execute(
            update(invitations)
            .where(invitations.c.id == invitation_id, invitations.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return True

    async def remove_all(self, group_id: GroupId) -> None:
        await self.session.execute(delete(invitations).where(invitations.c.group_id == group_id))

    async def redact_sent_to(self, email_hash: str, now: datetime) -> int:
        """Erase the address of every invitation sent to it (its account is deleted); returns how many."""
        result = await self.session.execute(
            update(invitations)
            .where(invitations.c.email_hash == email_hash)
            .values(email=None, email_hash=None, redacted_at=now)
        )
        return rowcount(result)

    async def emails_since(
        self, since: datetime, *, group_id: GroupId | None = None, created_by: UserId | None = None
    ) -> tuple[int, datetime | None]:
        """How many email invitations the group (or the inviter, in any group) made since then, and the oldest's
        time: what the daily bounds count."""
        query = select(func.count(), func.min(invitations.c.created_at)).where(
            invitations.c.email.is_not(None), invitations.c.created_at > since
        )
        if group_id is not None:
            query = query.where(invitations.c.group_id == group_id)
        if created_by is not None:
            query = query.where(invitations.c.created_by == created_by)
        count, oldest = (await self.session.execute(query)).one()
        return int(count), oldest

    async def page(self, group_id: GroupId, limit: int, after: dict[str, Any] | None) -> tuple[list[Invitation], Any]:
        """The group's invitations, newest first (revoked and expired ones too: the list is the organizers' record)."""
        query = (
            select(invitations)
            .where(invitations.c.group_id == group_id)
            .order_by(invitations.c.created_at.desc(), invitations.c.id.desc())
        )
        if after is not None:
            since, last_id = _time_position(after, "i")
            query = query.where(
                or_(
                    invitations.c.created_at < since,
                    and_(invitations.c.created_at == since, invitations.c.id < last_id),
                )
            )
        rows = list((await self.session.execute(query.limit(limit + 1))).mappings())
        found = [_invitation(row) for row in rows[:limit]]
        position = None
        if len(rows) > limit:
            position = {"t": found[-1].created_at.isoformat(), "i": found[-1].id}
        return found, position


GROUP_DELETION = "group_deletion"


class DeletionStore:
    """Group-deletion sagas in the kernel's saga table: id = the group's id, `data` = what the saga was started
    with (who belonged, who was waiting), kept for the saga's audit after the memberships themselves are gone."""

    def __init__(self, session: Executor) -> None:
        self.sagas = SagaStore(session, GROUP_DELETION)

    async def start(self, deletion: Deletion, data: dict[str, Any], now: datetime) -> None:
        await self.sagas.start(
            deletion.group_id, step=deletion.step.value, data=data, deadline_at=deletion.deadline_at, now=now
        )

    async def get(self, group_id: str) -> Deletion | None:
        saga = await self.sagas.get(group_id)
        return _deletion(saga) if saga else None

    async def save(self, deletion: Deletion, now: datetime, *, only_if_pending: bool = False) -> bool:
        """Store the deletion's new state. With `only_if_pending`, a saga that ended meanwhile (a reply committed
        after it was read) is left alone; returns whether it was changed."""
        return await self.sagas.move(
            deletion.group_id,
            now,
            status=deletion.status.value,
            step=deletion.step.value,
            reason=deletion.reason,
            deadline_at=deletion.deadline_at,
            only_if_pending=only_if_pending,
        )

    async def overdue(self, now: datetime, limit: int = 100) -> list[Deletion]:
        return [_deletion(saga) for saga in await self.sagas.overdue(now, limit)]


def _deletion(saga: SagaState) -> Deletion:
    assert saga.deadline_at is not None  # every group deletion is started with one
    return Deletion(
        group_id=GroupId(saga.id),
        status=DeletionStatus(saga.status),
        step=DeletionStep(saga.step),
        deadline_at=saga.deadline_at,
        reason=saga.reason,
    )


# user.profile_updated's statements (a consumer applies one per profile edit), built once and run on sqlite3 directly
# inside the consumer's transaction on inline SQLite (FixedWrite). The UPDATE's row is named by `key`: through
# SQLAlchemy (PostgreSQL) a parameter named after a column not in its SET would be taken for one more to set.
_PROFILE_VALUES = ("display_name", "avatar", "email_hash", "updated_at")
PROFILE_STATE = FixedWrite(
    select(member_profiles.c.updated_at, member_profiles.c.deleted_at).where(
        member_profiles.c.user_id == bindparam("user_id")
    )
)
ADD_PROFILE = FixedWrite(
    insert(member_profiles).values({name: bindparam(name) for name in ("user_id", *_PROFILE_VALUES)})
)
KEEP_PROFILE = FixedWrite(
    update(member_profiles)
    .where(member_profiles.c.user_id == bindparam("key"))
    .values({name: bindparam(name) for name in _PROFILE_VALUES})
)


class ProfileStore:
    """The read model of people's public names and avatars. Updates carry the whole profile and its time,
    so an older message arriving late (a replay, a retry) never overwrites a newer one."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def apply(self, event: UserProfileUpdated) -> None:
        row = await PROFILE_STATE.first(self.session, {"user_id": event.user_id})
        values = {
            "display_name": event.display_name,
            "avatar": event.avatar.model_dump() if event.avatar else None,
            # Only confirmed accounts are announced, with their confirmed address: its hash is all that is kept.
            "email_hash": address_hash(event.email) if event.email else None,
            "updated_at": event.updated_at,
        }
        if row is None:
            await ADD_PROFILE.execute(self.session, {"user_id": event.user_id, **values})
        elif row["deleted_at"] is None and row["updated_at"] <= event.updated_at:
            await KEEP_PROFILE.execute(self.session, {"key": event.user_id, **values})

    async def is_deleted(self, user_id: str) -> bool:
        query = select(member_profiles.c.deleted_at).where(member_profiles.c.user_id == user_id)
        return (await self.session.scalar(query)) is not None

    async def forget(self, user_id: str, deleted_at: datetime) -> None:
        values = {
            "display_name": None,
            "avatar": None,
            "email_hash": None,
            "updated_at": deleted_at,
            "deleted_at": deleted_at,
        }
        result = await self.session.execute(
            update(member_profiles).where(member_profiles.c.user_id == user_id).values(**values)
        )
        if rowcount(result) == 0:
            await self.session.execute(insert(member_profiles).values(user_id=user_id, **values))

    async def email_hash(self, user_id: str) -> str | None:
        """The hash of the person's confirmed email, None when not (yet) known."""
        query = select(member_profiles.c.email_hash).where(member_profiles.c.user_id == user_id)
        found: str | None = await self.session.scalar(query)
        return found


# --- unit of work -----------------------------------------------------------------------------------------------


class PersonalDataStore:
    """What the groups service holds of one person, as the files of their data export (others' ids left out)."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def files_of(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        group = [groups.c.id.label("group_id"), groups.c.name.label("group_name"), groups.c.slug]
        memberships_query = (
            select(*group, memberships.c.role, memberships.c.joined_at)
            .join(groups, groups.c.id == memberships.c.group_id)
            .where(memberships.c.user_id == user_id)
            .order_by(memberships.c.joined_at, groups.c.id)
        )
        requests_query = (
            select(*group, join_requests.c.answers, join_requests.c.requested_at)
            .join(groups, groups.c.id == join_requests.c.group_id)
            .where(join_requests.c.user_id == user_id)
            .order_by(join_requests.c.requested_at, groups.c.id)
        )
        bans_query = (
            select(*group, bans.c.banned_at)
            .join(groups, groups.c.id == bans.c.group_id)
            .where(bans.c.user_id == user_id)
            .order_by(bans.c.banned_at, groups.c.id)
        )
        organized_query = (
            select(
                *group,
                groups.c.description,
                groups.c.topics,
                groups.c.city,
                groups.c.visibility,
                groups.c.join_policy,
                groups.c.questions,
                groups.c.created_at,
            )
            .join(memberships, memberships.c.group_id == groups.c.id)
            .where(memberships.c.user_id == user_id, memberships.c.role == Role.ORGANIZER.value)
            .order_by(groups.c.created_at, groups.c.id)
        )
        return {
            "groups/memberships.json": rows((await self.session.execute(memberships_query)).mappings()),
            "groups/join_requests.json": rows((await self.session.execute(requests_query)).mappings()),
            "groups/bans.json": rows((await self.session.execute(bans_query)).mappings()),
            "groups/groups_organized.json": rows((await self.session.execute(organized_query)).mappings()),
        }


S = TypeVar("S")


class _Store(Generic[S]):
    """A store of `Stores`, made on their connection when first asked for and kept on them from then on (a plain
    attribute): a request uses one or two of the ten, and making all ten was ~3 µs of every read."""

    def __init__(self, make: Callable[[Executor], S]) -> None:
        self.make = make

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, stores: Stores, owner: type | None = None) -> S:
        made = stores.__dict__[self.name] = self.make(stores.stores_session)
        return made


class Stores:
    """Every store of the service on one connection or session (listed once: the unit of work is one too)."""

    groups = _Store(GroupStore)
    memberships = _Store(MembershipStore)
    requests = _Store(JoinRequestStore)
    bans = _Store(BanStore)
    known = _Store(KnownPeopleStore)
    invitations = _Store(InvitationStore)
    deletions = _Store(DeletionStore)
    profiles = _Store(ProfileStore)
    banners = _Store(lambda session: ReadyImageStore(session, banner_images))
    personal_data = _Store(PersonalDataStore)

    def __init__(self, session: Executor) -> None:
        self.stores_session = session
        for name in _STORE_NAMES:  # a unit of work's next transaction: no store of the last one's connection is kept
            self.__dict__.pop(name, None)


_STORE_NAMES = tuple(name for name, value in vars(Stores).items() if isinstance(value, _Store))


class GroupsUnitOfWork(UnitOfWork, Stores):
    """One transaction of the groups service: its stores plus the outbox."""

    def open_stores(self, session: AsyncConnection) -> None:
        Stores.__init__(self, session)


def unit_of_work(context: ServiceContext) -> GroupsUnitOfWork:
    return GroupsUnitOfWork(context.db, clock=context.clock, signal=context.signal)


@asynccontextmanager
async def reading(db: Database) -> AsyncIterator[Stores]:
    """Stores on a read-only connection (Core, no ORM session): queries that do not wait for SQLite's write turn."""
    async with db.read_connection() as connection:
        yield Stores(connection)
