"""GET /api/groups: text, topic, nearby and member=me searches, their order, cursors and validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from gatherly.groups.domain import GroupSearch, GroupSort
from gatherly.groups.tables import groups
from gatherly.kernel.geo import Point, distances_km
from gatherly.kernel.testing import CursorCase, check_cursors_tied_to_filters
from gatherly.kernel.web import decode_cursor, encode_cursor, filters_fingerprint, with_filters

pytestmark = pytest.mark.asyncio(loop_scope="module")

BERLIN = {"lat": 52.5200, "lng": 13.4050}
POTSDAM = {"lat": 52.3906, "lng": 13.0645}  # ~27 km from Berlin
LEIPZIG = {"lat": 51.3397, "lng": 12.3731}  # ~150 km
HAMBURG = {"lat": 53.5511, "lng": 9.9937}  # ~255 km
SUMMARY_FIELDS = {
    "id",
    "slug",
    "name",
    "city",
    "location",
    "topics",
    "member_count",
    "visibility",
    "join_policy",
    "banner",
    "distance_km",
}


async def _search(api: Any, person: Any = None, **params: Any) -> list[dict[str, Any]]:
    response = await api.client.get("/api/groups", params=params, headers=person.auth if person else {})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _all_pages(api: Any, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (await api.client.get("/api/groups", params={**params, **({"cursor": cursor} if cursor else {})})).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_text_search_matches_name_and_description_in_any_case(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    by_name = await shared_api.create(ann, name="ÜBER Walkers", topics=["textsearch"])
    by_description = await shared_api.create(
        ann, name="Strollers", description="We go über hills", topics=["textsearch"]
    )
    await shared_api.create(ann, name="Cyclists", description="100% wheels", topics=["textsearch"])

    found = await _search(shared_api, q="über", topic="textsearch")
    assert {g["id"] for g in found} == {by_name["id"], by_description["id"]}
    assert await _search(shared_api, q="WALKERS", topic="textsearch") == [g for g in found if g["id"] == by_name["id"]]
    assert [g["name"] for g in await _search(shared_api, q="100%", topic="textsearch")] == ["Cyclists"]
    assert await _search(shared_api, q="%", topic="textsearch") == await _search(
        shared_api, q="100%", topic="textsearch"
    )
    assert await _search(shared_api, q="_", topic="textsearch") == []  # wildcards are literal


async def test_topic_search_ignores_case(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    chess = await shared_api.create(ann, name="Chess Club", topics=["Board Games", "Chess"])
    await shared_api.create(ann, name="Go Club", topics=["Board Games"])
    assert [g["id"] for g in await _search(shared_api, topic="CHESS")] == [chess["id"]]
    assert len(await _search(shared_api, topic="board games")) == 2


async def test_private_groups_are_listed_with_the_summary_fields(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    private = await shared_api.create(ann, name="Secret Society", visibility="private", topics=["secrets"])
    [listed] = await _search(shared_api, topic="secrets")
    assert set(listed) == SUMMARY_FIELDS
    assert (listed["id"], listed["visibility"], listed["member_count"]) == (private["id"], "private", 1)


async def test_nearby_search_keeps_to_the_radius_and_orders_by_distance(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    made = {}
    for name, where in (("Hamburg", HAMBURG), ("Potsdam", POTSDAM), ("Berlin", BERLIN), ("Leipzig", LEIPZIG)):
        made[name] = await shared_api.create(ann, name=f"{name} Runners", location=where, topics=["nearby"])
    await shared_api.create(ann, name="Nowhere Runners", topics=["nearby"])  # no location: never "near"

    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    found = await _search(shared_api, topic="nearby", near=near, radius_km=200)
    assert [g["name"] for g in found] == ["Berlin Runners", "Potsdam Runners", "Leipzig Runners"]
    assert [round(g["distance_km"]) for g in found] == [0, 27, 149]
    assert [g["name"] for g in await _search(shared_api, topic="nearby", near=near)] == [
        "Berlin Runners",
        "Potsdam Runners",
    ]  # the default radius is 50 km
    paged = await _all_pages(shared_api, topic="nearby", near=near, radius_km=1000, limit=1)
    assert [g["name"] for g in paged] == ["Berlin Runners", "Potsdam Runners", "Leipzig Runners", "Hamburg Runners"]


async def test_nearest_first_lists_the_same_summaries_and_distances_as_any_other_nearby_order(shared_api: Any) -> None:
    # Nearest first on SQLite reads its candidates' cards in one statement and converts the page's rows only; every
    # other order with near measures the same candidates and reads the page's cards by a statement of their own.
    ann = await shared_api.person("Ann")
    for n, where in enumerate((BERLIN, POTSDAM, LEIPZIG, HAMBURG, BERLIN, POTSDAM)):
        await shared_api.create(
            ann,
            name=f"Same summaries {n} «ü» 😀",
            location=where,
            topics=["samesummaries", f"topic {n}"],
            city=None if n % 2 else "Berlin",
            visibility="private" if n == 1 else "public",
        )
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    nearest = await _all_pages(shared_api, topic="samesummaries", near=near, radius_km=200, limit=2)
    by_name = await _all_pages(shared_api, topic="samesummaries", near=near, radius_km=200, sort="name", limit=2)
    assert len(nearest) == 5  # Hamburg is beyond the radius
    assert sorted(nearest, key=lambda g: g["id"]) == sorted(by_name, key=lambda g: g["id"])
    assert [g["distance_km"] for g in nearest] == sorted(g["distance_km"] for g in nearest)


async def _pages(api: Any, person: Any = None, **params: Any) -> tuple[list[dict[str, Any]], list[int | None]]:
    """Every item of a search page by page, and each page's total."""
    items: list[dict[str, Any]] = []
    totals: list[int | None] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get("/api/groups", params=query, headers=person.auth if person else {})
        assert response.status_code == 200, response.text
        items.extend(response.json()["items"])
        totals.append(response.json()["total"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items, totals


async def test_nearest_first_pages_through_ties_and_the_radius_as_the_other_orders_find_them(shared_api: Any) -> None:
    # Nearest first on SQLite is ordered and paged inside SQLite (kernel/sqlite_geo.py's distance), every other order
    # with near measures its candidates in Python (geo.distances_km): the same groups, in (distance, id) order,
    # whatever the page size; ties (groups at one place) are split across pages by id; the cursors carry the float
    # geo.py measures.
    ann, dee = await shared_api.people("Ann", "Dee")
    places = [BERLIN, BERLIN, POTSDAM, POTSDAM, POTSDAM, LEIPZIG, HAMBURG, {"lat": 52.52, "lng": 13.4051}, BERLIN]
    for n, where in enumerate(places):
        await shared_api.create(
            dee if n in (0, 3, 5, 6) else ann,
            name=f"Ties {n} «Ünïcödé» 東京 😀" if n % 2 else f"ties {n}",
            location=where,
            topics=["nearestties"],
            city=None if n % 4 == 1 else "Somewhere",
        )
    for n in range(2):  # no place: never near
        await shared_api.create(dee, name=f"Ties nowhere {n}", topics=["nearestties"])
    center = Point(BERLIN["lat"], BERLIN["lng"])
    near = f"{center.lat},{center.lng}"

    def measured(group: dict[str, Any]) -> float:
        return distances_km(center, [(group["location"]["lat"], group["location"]["lng"])])[0]

    def nearest_first(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(groups, key=lambda g: (measured(g), g["id"]))

    for radius in (30, 200, 1000):
        by_name, _ = await _pages(shared_api, topic="nearestties", near=near, radius_km=radius, sort="name", limit=100)
        assert len(by_name) == {30: 7, 200: 8, 1000: 9}[radius]
        for limit in (1, 2, 3, 5, 6, 100):
            nearest, _ = await _pages(shared_api, topic="nearestties", near=near, radius_km=radius, limit=limit)
            assert nearest == nearest_first(by_name), (radius, limit)
    # On SQLite a cursor carries the distance geo.py measures, float for float (PostGIS's carry its own metres).
    on_sqlite = shared_api.running.settings.database_url.get_secret_value().startswith("sqlite")
    one_by_one = await shared_api.client.get("/api/groups", params={"topic": "nearestties", "near": near, "limit": 1})
    while on_sqlite and one_by_one.json()["next_cursor"]:
        cursor = one_by_one.json()["next_cursor"]
        assert decode_cursor(cursor)["d"] == measured(one_by_one.json()["items"][0])
        query = {"topic": "nearestties", "near": near, "limit": 1, "cursor": cursor}
        one_by_one = await shared_api.client.get("/api/groups", params=query)

    # The radius is inclusive: exactly Leipzig's distance holds it, a float less does not (on SQLite, where every
    # order measures with geo.py's floats; PostGIS measures in metres, its own way), the same in every order and in
    # the total.
    exactly = distances_km(center, [(LEIPZIG["lat"], LEIPZIG["lng"])])[0]
    for radius, holds_leipzig in ((exactly, True), (math.nextafter(exactly, 0), False)):
        for person, mine in ((None, {}), (dee, {"member": "me"})):
            params = {"topic": "nearestties", "near": near, "radius_km": repr(radius), **mine}
            by_name, _ = await _pages(shared_api, person, sort="name", **params)
            for limit in (1, 4, 20):
                nearest, totals = await _pages(shared_api, person, limit=limit, **params)
                assert nearest == nearest_first(by_name), (mine, limit)
                assert set(totals) == ({len(nearest)} if mine else {None})
            if on_sqlite:
                assert len(nearest) == (2 if mine else 7) + holds_leipzig, (radius, mine)


async def test_nearby_search_reaches_across_the_antimeridian(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    east = await shared_api.create(ann, name="Taveuni East", location={"lat": -16.8, "lng": -179.95})
    west = await shared_api.create(ann, name="Taveuni West", location={"lat": -16.8, "lng": 179.95})
    found = await _search(shared_api, near="-16.8,179.99", radius_km=30)
    assert [g["id"] for g in found] == [west["id"], east["id"]]


async def test_without_near_the_newest_come_first_page_by_page(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    made = [await shared_api.create(ann, name=f"Paged {n}", topics=["paging"]) for n in range(5)]
    paged = await _all_pages(shared_api, topic="paging", limit=2)
    assert [g["id"] for g in paged] == [g["id"] for g in reversed(made)]


async def test_member_me_lists_the_callers_groups_only(shared_api: Any) -> None:
    ann, bob = await shared_api.people("Ann", "Bob")
    mine = await shared_api.create(bob, name="Bob's private club", visibility="private")
    joined = await shared_api.create(ann, name="Ann's open club")
    await shared_api.join(bob, joined["id"])
    await shared_api.create(ann, name="Not Bob's")
    assert {g["id"] for g in await _search(shared_api, bob, member="me")} == {mine["id"], joined["id"]}
    # One page holds them all: the total is the page's length (taken without the count's statement).
    page = (await shared_api.client.get("/api/groups", params={"member": "me"}, headers=bob.auth)).json()
    assert (page["total"], page["next_cursor"]) == (2, None)
    anonymous = await shared_api.client.get("/api/groups", params={"member": "me"})
    assert anonymous.status_code == 401


async def test_member_me_gives_the_same_total_on_a_first_page_as_on_the_next_ones(shared_api: Any) -> None:
    # A first page takes its total from its own statement (COUNT(*) OVER ()), a next page from a COUNT of its own:
    # the two may never disagree, whatever the sort, the page size and the filters.
    ann, cy = await shared_api.people("Ann", "Cy")
    for n in range(4):
        await shared_api.create(cy, name=f"Cy's {'hikers' if n % 2 else 'readers'} {n}", topics=["totals"])
    joined = await shared_api.create(ann, name="Ann's hikers", topics=["totals"])
    await shared_api.join(cy, joined["id"])
    await shared_api.create(ann, name="Ann's other hikers", topics=["totals"])  # not Cy's
    for filters, expected in (({}, 5), ({"q": "hikers"}, 3), ({"topic": "totals", "q": "readers"}, 2)):
        for sort in ("newest", "members", "name"):
            for limit in (1, 2, 5, 6):
                params: dict[str, Any] = {"member": "me", "sort": sort, "limit": limit, **filters}
                seen, totals, cursor = 0, [], None
                while True:
                    query = {**params, **({"cursor": cursor} if cursor else {})}
                    page = (await shared_api.client.get("/api/groups", params=query, headers=cy.auth)).json()
                    seen, cursor = seen + len(page["items"]), page["next_cursor"]
                    totals.append(page["total"])
                    if cursor is None:
                        break
                assert totals == [expected] * len(totals) and seen == expected, (params, totals)


async def test_member_me_pages_are_the_general_pages_restricted_to_the_callers_groups(shared_api: Any) -> None:
    # member=me joins the groups with the caller's memberships; the same search without it, page by page in the same
    # order, restricted to the groups the caller belongs to, must give the same groups: not a group they left, asked
    # to join, or that was deleted.
    ann, eve = await shared_api.people("Ann", "Eve")
    mine = []
    for n in range(3):
        mine.append(await shared_api.create(eve, name=f"Restricted {'hikers' if n % 2 else 'ünïcode'} {n}"))
    for n in range(5):
        group = await shared_api.create(ann, name=f"Restricted {'hikers' if n % 2 else 'others'} {n}")
        if n in (0, 1):
            await shared_api.join(eve, group["id"])
            mine.append(group)
        if n == 2:
            await shared_api.join(eve, group["id"])
            left = await shared_api.client.delete(f"/api/groups/{group['id']}/members/me", headers=eve.auth)
            assert left.status_code == 204, left.text
    asked = await shared_api.create(ann, name="Restricted approval", join_policy="approval")
    assert await shared_api.join(eve, asked["id"], answers=[]) == "pending"
    deleted = await shared_api.create(eve, name="Restricted deleted")
    assert (await shared_api.client.delete(f"/api/groups/{deleted['id']}", headers=eve.auth)).status_code == 202
    await shared_api.running.settle()
    ids = {g["id"] for g in mine}
    for filters in ({"q": "restricted"}, {"q": "hikers"}, {"q": "ünïcode"}):
        for sort in ("newest", "members", "name"):
            everyone, _ = await _pages(shared_api, sort=sort, limit=100, **filters)
            expected = [g for g in everyone if g["id"] in ids]
            for limit in (1, 2, 5):
                found, totals = await _pages(shared_api, eve, member="me", sort=sort, limit=limit, **filters)
                assert found == expected, (filters, sort, limit)
                assert set(totals) == {len(expected)}
    assert len((await _pages(shared_api, eve, member="me", q="restricted"))[0]) == 5


async def test_member_me_combines_with_text_and_near_and_is_ordered_by_distance(shared_api: Any) -> None:
    ann, bob = await shared_api.people("Ann", "Bob")
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    far = await shared_api.create(ann, name="Combo Leipzig", location=LEIPZIG)
    close = await shared_api.create(ann, name="Combo Potsdam", location=POTSDAM)
    here = await shared_api.create(bob, name="Combo Berlin", location=BERLIN, visibility="private")
    await shared_api.create(ann, name="Combo Berlin, not Bob's", location=BERLIN)
    hamburg = await shared_api.create(ann, name="Combo Hamburg", location=HAMBURG)  # Bob's, but out of reach
    for group in (far, close, hamburg):
        await shared_api.join(bob, group["id"])

    found = await _search(shared_api, bob, member="me", q="COMBO", near=near, radius_km=200)
    assert [g["id"] for g in found] == [here["id"], close["id"], far["id"]]
    assert [round(g["distance_km"]) for g in found] == [0, 27, 149]
    # The total counts Bob's groups matching the text within the radius (not Hamburg), on every page, in every order.
    whole = await shared_api.client.get(
        "/api/groups", params={"member": "me", "q": "combo", "near": near, "radius_km": 200}, headers=bob.auth
    )
    assert (len(whole.json()["items"]), whole.json()["next_cursor"], whole.json()["total"]) == (3, None, 3)
    for sort in ("distance", "name", "newest"):
        paged, totals = [], []
        cursor = None
        while True:
            params = {"member": "me", "q": "combo", "near": near, "radius_km": 200, "limit": 1, "sort": sort}
            response = await shared_api.client.get(
                "/api/groups", params={**params, **({"cursor": cursor} if cursor else {})}, headers=bob.auth
            )
            paged.extend(response.json()["items"])
            totals.append(response.json()["total"])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        assert sorted(g["id"] for g in paged) == sorted(g["id"] for g in found), sort
        assert totals == [3, 3, 3], sort
        if sort == "distance":
            assert paged == found
    wider = await shared_api.client.get(
        "/api/groups", params={"member": "me", "q": "combo", "near": near, "radius_km": 300}, headers=bob.auth
    )
    assert wider.json()["total"] == 4  # Hamburg, ~255 km


async def test_sort_distance_is_nearest_first_and_nearest_is_taken_as_its_other_name(shared_api: Any) -> None:
    # The contract names the order `distance`; `nearest`, its former name, still works, and so do its cursors.
    ann = await shared_api.person("Ann")
    for n, place in enumerate((LEIPZIG, BERLIN, POTSDAM, BERLIN)):
        await shared_api.create(ann, name=f"Distance {n}", location=place, topics=["distancesort"])
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    params = {"topic": "distancesort", "near": near, "radius_km": 200}
    default, _ = await _pages(shared_api, **params, limit=100)
    assert [round(g["distance_km"]) for g in default] == [0, 0, 27, 149]
    for limit in (1, 3):
        assert (await _pages(shared_api, **params, sort="distance", limit=limit))[0] == default
        assert (await _pages(shared_api, **params, sort="nearest", limit=limit))[0] == default
    # A cursor made under one name pages under the other.
    for first, then in (("nearest", "distance"), ("distance", "nearest")):
        page = (await shared_api.client.get("/api/groups", params={**params, "sort": first, "limit": 2})).json()
        rest = await _all_pages(shared_api, **params, sort=then, limit=2, cursor=page["next_cursor"])
        assert page["items"] + rest == default, (first, then)
    for sort in ("distance", "nearest"):
        response = await shared_api.client.get("/api/groups", params={"sort": sort})
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["sort"]


async def test_pending_me_pages_are_the_general_pages_restricted_to_the_callers_waiting_requests(
    shared_api: Any,
) -> None:
    # pending=me joins the groups with the caller's join requests, as member=me does with memberships: the same
    # search without it, restricted to the groups where the caller's request waits, gives the same pages; not a group
    # they belong to, were approved in or denied by, and not another person's request.
    ann, eve, fay = await shared_api.people("Ann", "Eve", "Fay")
    waiting = []
    for n, place in enumerate((BERLIN, POTSDAM, LEIPZIG, HAMBURG)):
        group = await shared_api.create(
            ann, name=f"Waiting {'hikers' if n % 2 else 'readers'} {n}", join_policy="approval", location=place
        )
        assert await shared_api.join(eve, group["id"]) == "pending"
        waiting.append(group)
    approved = await shared_api.create(ann, name="Waiting approved", join_policy="approval")
    await shared_api.join(eve, approved["id"])
    await shared_api.approve(ann, approved["id"], eve)
    denied = await shared_api.create(ann, name="Waiting denied", join_policy="approval")
    await shared_api.join(eve, denied["id"])
    refused = await shared_api.client.post(f"/api/groups/{denied['id']}/requests/{eve.user_id}/deny", headers=ann.auth)
    assert refused.status_code == 200, refused.text
    await shared_api.join(eve, (await shared_api.create(ann, name="Waiting open"))["id"])  # a member at once
    others = await shared_api.create(ann, name="Waiting for Fay", join_policy="approval")
    await shared_api.join(fay, others["id"])
    await shared_api.running.settle()

    ids = {g["id"] for g in waiting}
    for filters in ({"q": "waiting"}, {"q": "hikers"}):
        for sort in ("newest", "members", "name"):
            everyone, _ = await _pages(shared_api, sort=sort, limit=100, **filters)
            expected = [g for g in everyone if g["id"] in ids]
            for limit in (1, 3, 5):
                found, totals = await _pages(shared_api, eve, pending="me", sort=sort, limit=limit, **filters)
                assert found == expected, (filters, sort, limit)
                assert set(totals) == {len(expected)}
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    found, totals = await _pages(shared_api, eve, pending="me", q="waiting", near=near, radius_km=200, limit=1)
    assert [g["id"] for g in found] == [g["id"] for g in waiting[:3]]  # nearest first; Hamburg is out of reach
    assert totals == [3, 3, 3]
    assert [g["id"] for g in (await _pages(shared_api, fay, pending="me", q="waiting"))[0]] == [others["id"]]

    anonymous = await shared_api.client.get("/api/groups", params={"pending": "me"})
    assert anonymous.status_code == 401
    both = await shared_api.client.get("/api/groups", params={"member": "me", "pending": "me"}, headers=eve.auth)
    assert both.status_code == 422, both.text
    assert [error["field"] for error in both.json()["errors"]] == ["pending"]


def _relevance(query: str) -> Any:
    """sort=relevance's rank of a found group, from its name: 0 the name starts with the folded query, 1 it contains
    it, 2 the text matched elsewhere (the description)."""
    folded = query.casefold()

    def rank(group: dict[str, Any]) -> int:
        name = group["name"].casefold()
        return 0 if name.startswith(folded) else 1 if folded in name else 2

    return rank


async def test_relevance_puts_names_starting_with_the_text_first_then_names_containing_it_newest_first(
    shared_api: Any,
) -> None:
    ann = await shared_api.person("Ann")
    names = [
        ("Hiking Berlin", ""),  # starts
        ("Berlin hikers", ""),  # a word starts
        ("Walkers", "We like HIKING"),  # the description only
        ("HIKERS United", ""),  # starts, in another case
        ("Bushiking", ""),  # inside a word
        ("Ünïcode Hikers", "hiking too"),  # the name contains it, the description too
        ("Readers", "no match"),
        ("hik", ""),  # the text itself
        ("Strollers", "a hike"),  # the description only
    ]
    made = {}
    for name, description in names:
        made[name] = await shared_api.create(ann, name=name, description=description, topics=["relevance"])
    expected = ["hik", "HIKERS United", "Hiking Berlin", "Ünïcode Hikers", "Bushiking", "Berlin hikers"]
    expected += ["Strollers", "Walkers"]
    for query in ("HIK", "hik"):
        found, totals = await _pages(shared_api, q=query, topic="relevance", sort="relevance", limit=100)
        assert [g["name"] for g in found] == expected
        assert totals == [None]
        # The same groups the default order (newest first, unchanged) finds, ranked; ties newest first.
        newest, _ = await _pages(shared_api, q=query, topic="relevance", limit=100)
        assert [g["id"] for g in newest] == [made[name]["id"] for name, _ in reversed(names) if name != "Readers"]
        assert found == sorted(newest, key=_relevance(query))
        for limit in (1, 2, 3, 7):
            assert (await _pages(shared_api, q=query, topic="relevance", sort="relevance", limit=limit))[0] == found
    # Under three characters SQLite takes the LIKE, not the trigram index; the rank is the same.
    short, _ = await _pages(shared_api, q="Hi", topic="relevance", sort="relevance", limit=2)
    newest, _ = await _pages(shared_api, q="Hi", topic="relevance", limit=100)
    assert short == sorted(newest, key=_relevance("Hi")) and len(short) == 8


async def test_relevance_folds_the_text_as_the_name_and_takes_wildcards_literally(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    street = await shared_api.create(ann, name="Straße Walkers", topics=["relevancefold"])
    elsewhere = await shared_api.create(ann, name="Walkers", description="strasse", topics=["relevancefold"])
    found = await _search(shared_api, q="STRASSE", topic="relevancefold", sort="relevance")
    assert [g["id"] for g in found] == [street["id"], elsewhere["id"]]  # ß folds to ss in the name as in the text
    first = await shared_api.create(ann, name="_hik first", topics=["relevancefold"])
    later = await shared_api.create(ann, name="Xhik club", description="the _hik tag", topics=["relevancefold"])
    found = await _search(shared_api, q="_hik", topic="relevancefold", sort="relevance")
    assert [g["id"] for g in found] == [first["id"], later["id"]]  # `_` is no wildcard: Xhik only in the description
    found = await _search(shared_api, q="%", topic="relevancefold", sort="relevance")
    assert found == []


async def test_relevance_keeps_to_the_radius_and_the_callers_groups_page_by_page(shared_api: Any) -> None:
    # With near (SQLite: the ids within the radius, then ranked; PostgreSQL: PostGIS's ST_DWithin), with member=me
    # and pending=me (a join, and a first page counted in the page's own statement): the general relevance order
    # restricted to those groups, through pages of any size.
    ann, bob = await shared_api.people("Ann", "Bob")
    places = [BERLIN, POTSDAM, LEIPZIG, HAMBURG, None, BERLIN, POTSDAM]
    made = []
    for n, place in enumerate(places):
        name = ("Rowers of Spree", "Spree rowers", "Boats", "Spreeside")[n % 4] + f" {n}"
        description = "we row on the spree" if name.startswith("Boats") else ""
        fields = {"location": place} if place else {}
        group = await shared_api.create(
            ann, name=name, description=description, topics=["relevancenear"], join_policy="approval", **fields
        )
        made.append(group)
    for group in made[::2]:
        assert await shared_api.join(bob, group["id"]) == "pending"
    for group in made[::4]:
        await shared_api.approve(ann, group["id"], bob)
    await shared_api.running.settle()
    params = {"q": "spree", "topic": "relevancenear", "sort": "relevance"}
    everyone, _ = await _pages(shared_api, **params, limit=100)
    assert len(everyone) == 7 and [_relevance("spree")(g) for g in everyone] == [0, 0, 0, 1, 1, 2, 2]
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    within = {g["id"] for g in made[:3] + made[5:]}  # not Hamburg (~255 km), nor the group without a place
    nearby, _ = await _pages(shared_api, **params, near=near, radius_km=200, limit=100)
    assert [g["id"] for g in nearby] == [g["id"] for g in everyone if g["id"] in within]
    assert all(g["distance_km"] is not None for g in nearby)
    newest, _ = await _pages(shared_api, q="spree", topic="relevancenear", near=near, radius_km=200, sort="newest")
    assert nearby == sorted(newest, key=_relevance("spree"))
    members = {made[0]["id"], made[4]["id"]}
    waiting = {made[2]["id"], made[6]["id"]}
    for limit in (1, 2, 3):
        assert (await _pages(shared_api, **params, limit=limit))[0] == everyone
        assert (await _pages(shared_api, **params, near=near, radius_km=200, limit=limit))[0] == nearby
        for mine, ids in (({"member": "me"}, members), ({"pending": "me"}, waiting)):
            found, totals = await _pages(shared_api, bob, **params, **mine, limit=limit)
            expected = [g for g in everyone if g["id"] in ids]
            assert found == expected and set(totals) == {len(expected)}, (mine, limit)
            found, totals = await _pages(shared_api, bob, **params, **mine, near=near, radius_km=200, limit=limit)
            expected = [g for g in nearby if g["id"] in ids]
            assert found == expected and set(totals) == {len(expected)}, (mine, limit)


async def test_relevance_is_asked_for_and_needs_a_text(shared_api: Any) -> None:
    for params in ({"sort": "relevance"}, {"sort": "relevance", "q": "  "}, {"sort": "relevance", "near": "0,0"}):
        response = await shared_api.client.get("/api/groups", params=params)
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["sort"]
    # A relevance cursor pages nothing else, nor another sort's cursor relevance.
    ann = await shared_api.person("Ann")
    for n in range(2):
        await shared_api.create(ann, name=f"Crossed {n}", topics=["relevancecursor"], location=BERLIN)
    params = {"q": "crossed", "topic": "relevancecursor", "limit": 1}
    for first, then in (("relevance", "newest"), ("newest", "relevance"), ("relevance", "name")):
        cursor = (await shared_api.client.get("/api/groups", params={**params, "sort": first})).json()["next_cursor"]
        response = await shared_api.client.get("/api/groups", params={**params, "sort": then, "cursor": cursor})
        assert response.status_code == 422, (first, then)
        assert [error["field"] for error in response.json()["errors"]] == ["cursor"]
    cursor = (await shared_api.client.get("/api/groups", params={**params, "sort": "relevance"})).json()["next_cursor"]
    assert set(decode_cursor(cursor)) == {"s", "r", "k", "i", "f"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"near": "52.5"}, "near"),
        ({"near": "north,south"}, "near"),
        ({"near": "95,13"}, "near"),
        ({"near": "52,200"}, "near"),
        ({"near": "52.5,13.4", "radius_km": "0"}, "radius_km"),
        ({"near": "52.5,13.4", "radius_km": "-5"}, "radius_km"),
        ({"near": "52.5,13.4", "radius_km": "5000"}, "radius_km"),
        ({"near": "52.5,13.4", "radius_km": "nan"}, "radius_km"),
        ({"near": "52.5,13.4", "radius_km": "far"}, "radius_km"),
        ({"radius_km": "10"}, "radius_km"),
        ({"member": "you"}, "member"),
        ({"pending": "you"}, "pending"),
        ({"sort": "nearest_first"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_search_parameters_are_422_problems(shared_api: Any, params: dict[str, str], field: str) -> None:
    response = await shared_api.client.get("/api/groups", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_a_cursor_of_one_kind_of_search_is_refused_by_the_other(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    for n in range(2):
        await shared_api.create(ann, name=f"Mixed {n}", topics=["mixed"], location=BERLIN)
    newest = (await shared_api.client.get("/api/groups", params={"topic": "mixed", "limit": 1})).json()
    response = await shared_api.client.get(
        "/api/groups", params={"topic": "mixed", "near": "52.52,13.40", "cursor": newest["next_cursor"]}
    )
    assert response.status_code == 422


async def test_nearby_search_around_the_poles_reaches_every_longitude(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    greenwich = await shared_api.create(ann, name="Pole Greenwich", location={"lat": 89.9, "lng": 0.0}, topics=["pole"])
    dateline = await shared_api.create(ann, name="Pole Dateline", location={"lat": 89.9, "lng": 180.0}, topics=["pole"])
    await shared_api.create(ann, name="Pole Far", location={"lat": 89.5, "lng": 90.0}, topics=["pole"])  # ~56 km
    south = await shared_api.create(ann, name="Pole South", location={"lat": -89.95, "lng": -45.0}, topics=["pole"])

    across = await _search(shared_api, topic="pole", near="89.95,0", radius_km=30)
    assert [g["id"] for g in across] == [greenwich["id"], dateline["id"]]  # 5.6 and 16.7 km, over the pole
    assert [round(g["distance_km"], 1) for g in across] == [5.6, 16.7]
    at_the_pole = await _search(shared_api, topic="pole", near="90,123", radius_km=12)
    assert {g["id"] for g in at_the_pole} == {greenwich["id"], dateline["id"]}  # 11.1 km each, any longitude
    assert [g["id"] for g in await _search(shared_api, topic="pole", near="-90,0", radius_km=6)] == [south["id"]]


async def test_the_radius_is_inclusive_up_to_its_limit_and_refused_beyond(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    here = await shared_api.create(ann, name="Radius Zero", location={"lat": 0.0, "lng": 0.0}, topics=["radius"])
    # 8.99 degrees along the equator: 999.64 km.
    far = await shared_api.create(ann, name="Radius Far", location={"lat": 0.0, "lng": 8.99}, topics=["radius"])

    widest = await _search(shared_api, topic="radius", near="0,0", radius_km=1000)
    assert [g["id"] for g in widest] == [here["id"], far["id"]]
    assert widest[1]["distance_km"] == pytest.approx(999.64, abs=0.01)
    assert [g["id"] for g in await _search(shared_api, topic="radius", near="0,0", radius_km=999.6)] == [here["id"]]
    assert [g["id"] for g in await _search(shared_api, topic="radius", near="0,0", radius_km=0.001)] == [here["id"]]
    for radius in ("1000.001", "1e308", "inf", "1_0"):  # float() reads 1_0 as 10
        response = await shared_api.client.get("/api/groups", params={"near": "0,0", "radius_km": radius})
        assert response.status_code == 422, radius
        assert "radius_km" in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    "position",
    [
        {"m": "far", "i": "x"},
        {"m": True, "i": "x"},
        {"d": [1], "i": "x"},
        {"m": 1.0},
        {"d": None, "i": "x"},
        # The id after which the page goes on is a group's id, text (an outsider's probe: these gave 200).
        {"d": 1.0, "i": None},
        {"m": 1.0, "i": 7},
        {"d": 1.0, "i": ["x"]},
        {"m": 1.0, "i": {}},
    ],
)
async def test_a_forged_nearest_first_cursor_is_refused(shared_api: Any, position: dict[str, Any]) -> None:
    search = GroupSearch(near=Point(0.0, 0.0), sort=GroupSort.DISTANCE)  # what near=0,0 asks for
    well_formed = _forged(search, {"s": "nearest", "d": 1.0, "m": 1000.0, "i": "x"})  # "d" SQLite's, "m" PostGIS's
    assert (
        await shared_api.client.get("/api/groups", params={"near": "0,0", "cursor": well_formed})
    ).status_code == 200
    cursor = _forged(search, {"s": "nearest", **position})
    response = await shared_api.client.get("/api/groups", params={"near": "0,0", "cursor": cursor})
    assert response.status_code == 422, response.text
    assert "cursor" in [error["field"] for error in response.json()["errors"]]


_TIME = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "position",
    [
        {"r": "0", "k": _TIME, "i": "x"},
        {"r": True, "k": _TIME, "i": "x"},
        {"r": 1.0, "k": _TIME, "i": "x"},
        {"r": 3, "k": _TIME, "i": "x"},
        {"r": -1, "k": _TIME, "i": "x"},
        {"r": None, "k": _TIME, "i": "x"},
        {"k": _TIME, "i": "x"},
        {"r": 0, "i": "x"},
        {"r": 0, "k": _TIME},
        {"r": 0, "k": "yesterday", "i": "x"},
        {"r": 0, "k": 7, "i": "x"},
        {"r": 0, "k": _TIME, "i": None},
        {"r": 0, "k": _TIME, "i": ["x"]},
    ],
)
@pytest.mark.parametrize("near", [None, "52.52,13.405"])
async def test_a_forged_relevance_cursor_is_refused(
    shared_api: Any, position: dict[str, Any], near: str | None
) -> None:
    center = Point(*(float(part) for part in near.split(","))) if near else None
    search = GroupSearch(text="hikers", near=center, sort=GroupSort.RELEVANCE)
    params = {"q": "hikers", "sort": "relevance", **({"near": near} if near else {})}
    well_formed = _forged(search, {"s": "relevance", "r": 0, "k": _TIME, "i": "x"})
    assert (await shared_api.client.get("/api/groups", params={**params, "cursor": well_formed})).status_code == 200
    params["cursor"] = _forged(search, {"s": "relevance", **position})
    response = await shared_api.client.get("/api/groups", params=params)
    assert response.status_code == 422, response.text
    assert "cursor" in [error["field"] for error in response.json()["errors"]]


def _forged(search: GroupSearch, position: dict[str, Any]) -> str:
    """A cursor of `search` (the fingerprint of its filters, as the API adds it) at any position: base64 JSON anyone
    can write, so that what the position holds is checked, not only the filters it came with."""
    return encode_cursor(with_filters(position, filters_fingerprint(search.filters)))


async def test_a_cursor_sent_with_other_filters_than_it_was_made_with_is_refused(shared_api: Any) -> None:
    """A cursor's position is a place in the list it was made in: with other filters it would start a page of neither
    list, so it gets the 422 of a forged cursor, also when the sort is the same (one issued before cursors carried
    their filters is taken as then). The same filters written otherwise (case, spaces, a default radius spelt out)
    are the same search."""
    ann, bob = await shared_api.people("Ann", "Bob")
    made = [
        await shared_api.create(ann, name=f"Fingerprint {n}", topics=["fingerprinted"], location=BERLIN)
        for n in range(3)
    ]
    await shared_api.join(bob, made[0]["id"])
    near = f"{BERLIN['lat']},{BERLIN['lng']}"
    cases: list[CursorCase] = [
        (
            {"q": "fingerprint", "topic": "fingerprinted"},
            [{"q": "FINGERPRINT ", "topic": "Fingerprinted"}],
            [
                {"q": "fingerprint 1", "topic": "fingerprinted"},
                {"topic": "fingerprinted"},
                {"q": "fingerprint"},
                {"q": "fingerprint", "topic": "other"},
                {"q": "fingerprint", "topic": "fingerprinted", "near": near, "sort": "newest"},
                {"q": "fingerprint", "topic": "fingerprinted", "member": "me"},
                {"q": "fingerprint", "topic": "fingerprinted", "pending": "me"},
                {"q": "fingerprint", "topic": "fingerprinted", "sort": "relevance"},
            ],
        ),
        (
            {"topic": "fingerprinted", "near": near},
            [{"topic": "fingerprinted", "near": near, "radius_km": "50", "sort": "distance"}],
            [
                {"topic": "fingerprinted", "near": near, "radius_km": 20},
                {"topic": "fingerprinted", "near": "52.52,13.406"},
                {"topic": "fingerprinted", "near": near, "q": "fingerprint"},
            ],
        ),
        (
            {"topic": "fingerprinted", "member": "me", "sort": "name"},
            [],
            [{"topic": "fingerprinted", "sort": "name"}, {"topic": "fingerprinted", "pending": "me", "sort": "name"}],
        ),
    ]
    await check_cursors_tied_to_filters(shared_api.client, "/api/groups", ann.auth, cases)


async def test_a_pages_cursor_carries_its_last_groups_sort_key_as_the_database_holds_it(shared_api: Any) -> None:
    """A page's rows leave their creation time as the driver gives it (on SQLite its text: no list shows it), and the
    cursor converts the last row's alone (store._position_after): every page's next_cursor must be, byte for byte,
    the one made of that group's row as SQLAlchemy reads it, for times with and without a fraction of a second, in
    every order a cursor carries, with and without a total (member=me's first page) and the relevance rank."""
    ann = await shared_api.person("Ann")
    made = []
    for n in range(6):  # the relevance ranks 0 (the name starts with the text), 1 (contains it), 2 (the description)
        name = f"{('Cursorkey', 'A cursorkey', 'Walkers')[n % 3]} {n}"
        made.append(await shared_api.create(ann, name=name, description="cursorkey", topics=["ck"]))
    db = shared_api.running.process.host("groups").context.db
    whole_second = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)  # SQLite: ".000000", read back without a fraction
    async with db.writing() as session:  # two groups at the same time: the id orders them
        for group in (made[0], made[2]):
            await session.execute(update(groups).where(groups.c.id == group["id"]).values(created_at=whole_second))
    async with db.read_connection() as connection:
        query = select(groups).where(groups.c.id.in_([group["id"] for group in made]))
        stored = {row["id"]: row for row in (await connection.execute(query)).mappings()}
    keys = {"newest": "created_at", "relevance": "created_at", "members": "member_count", "name": "name_key"}
    for filters in ({"q": "cursorkey"}, {"topic": "ck"}, {"topic": "ck", "member": "me"}):
        for sort in ("newest", "members", "name", *(("relevance",) if "q" in filters else ())):
            search = GroupSearch(
                text=filters.get("q"),
                topic=filters.get("topic"),
                member=ann.user_id if "member" in filters else None,
                sort=GroupSort(sort),
            )
            for limit in (1, 2, 4):
                cursor = None
                while True:
                    query_params = {**filters, "sort": sort, "limit": limit, **({"cursor": cursor} if cursor else {})}
                    response = await shared_api.client.get("/api/groups", params=query_params, headers=ann.auth)
                    assert response.status_code == 200, response.text
                    page = response.json()
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                    last = stored[page["items"][-1]["id"]]
                    key = last[keys[sort]]
                    position = {"s": sort, "k": key.isoformat() if sort in ("newest", "relevance") else key}
                    position["i"] = last["id"]
                    if sort == "relevance":
                        position["r"] = _relevance("cursorkey")(page["items"][-1])
                    assert cursor == _forged(search, position), (filters, sort, limit)
