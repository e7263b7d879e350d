"""The rules of groups, without a database: roles, joining, slugs, geography."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatherly.groups.domain import (
    Action,
    AlreadyRequested,
    Banned,
    GroupId,
    GroupSort,
    Invitation,
    InvitationForAnotherAddress,
    InvitationUnusable,
    Join,
    JoinPolicy,
    LastOrganizer,
    Location,
    LoginRequired,
    NotAllowed,
    NotForYourself,
    Relation,
    Role,
    Standing,
    Tenure,
    TooManyInvitations,
    UserId,
    Visibility,
    answers_for,
    check_invitation_quota,
    check_leaving,
    check_removal,
    check_role_change,
    check_stepping_down,
    decide_join,
    decision_message,
    details_from,
    group_sort,
    invitation_terms,
    may,
    normalize_topics,
    parse_near,
    pick_slug,
    require,
    require_member_list,
    search_text,
    slug_base,
    successor,
    valid_radius,
)
from gatherly.kernel.addresses import address_hash
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.geo import EARTH_RADIUS_KM, bounding_box, distance_km

BERLIN = Location(52.5200, 13.4050)
PARIS = Location(48.8566, 2.3522)

# --- roles ----------------------------------------------------------------------------------------------------


def test_roles_rank_organizer_over_co_organizer_over_event_organizer_over_member() -> None:
    ranked = sorted(Role, key=lambda role: role.rank, reverse=True)
    assert ranked == [Role.ORGANIZER, Role.CO_ORGANIZER, Role.EVENT_ORGANIZER, Role.MEMBER]


def test_the_three_leader_roles_lead_and_the_top_two_manage_members() -> None:
    assert [r for r in Role if r.is_leader] == [Role.ORGANIZER, Role.CO_ORGANIZER, Role.EVENT_ORGANIZER]
    assert [r for r in Role if r.manages_members] == [Role.ORGANIZER, Role.CO_ORGANIZER]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.ORGANIZER, set(Action)),
        (Role.CO_ORGANIZER, set(Action) - {Action.EDIT_GROUP, Action.DELETE_GROUP}),
        (Role.EVENT_ORGANIZER, set()),
        (Role.MEMBER, set()),
        (None, set()),
    ],
)
def test_what_each_role_may_do(role: Role | None, allowed: set[Action]) -> None:
    relation = Relation(role=role)
    assert {action for action in Action if may(relation, action)} == allowed
    for action in set(Action) - allowed:
        with pytest.raises(NotAllowed):
            require(relation, action)


def test_pending_and_banned_people_may_do_nothing_a_member_may() -> None:
    for relation in (Relation(pending=True), Relation(banned=True)):
        assert not any(may(relation, action) for action in Action)


def test_standing_shows_member_pending_or_banned() -> None:
    assert Relation(role=Role.MEMBER).standing is Standing.MEMBER
    assert Relation(pending=True).standing is Standing.PENDING
    assert Relation(banned=True).standing is Standing.BANNED
    assert Relation().standing is None


def test_a_banned_person_cannot_join() -> None:
    with pytest.raises(Banned):
        decide_join(Relation(banned=True), JoinPolicy.OPEN)
    decide_join(Relation(), JoinPolicy.OPEN)


def test_joining_is_decided_by_relation_then_policy() -> None:
    assert decide_join(Relation(role=Role.MEMBER), JoinPolicy.APPROVAL) is Join.ALREADY_MEMBER
    with pytest.raises(AlreadyRequested):
        decide_join(Relation(pending=True), JoinPolicy.APPROVAL)
    assert decide_join(Relation(pending=True), JoinPolicy.APPROVAL, invited=True) is Join.ADMIT
    assert decide_join(Relation(), JoinPolicy.APPROVAL, invited=True) is Join.ADMIT
    with pytest.raises(Banned):
        decide_join(Relation(banned=True), JoinPolicy.OPEN, invited=True)
    assert decide_join(Relation(), JoinPolicy.OPEN) is Join.ADMIT
    assert decide_join(Relation(), JoinPolicy.APPROVAL) is Join.REQUEST


def test_a_private_member_list_asks_anonymous_callers_to_log_in_and_refuses_outsiders() -> None:
    require_member_list(Visibility.PUBLIC, Relation(), anonymous=True)
    require_member_list(Visibility.PRIVATE, Relation(role=Role.MEMBER), anonymous=False)
    with pytest.raises(LoginRequired):
        require_member_list(Visibility.PRIVATE, Relation(), anonymous=True)
    with pytest.raises(NotAllowed):
        require_member_list(Visibility.PRIVATE, Relation(pending=True), anonymous=False)


def test_the_last_organizer_cannot_leave_but_one_of_two_can() -> None:
    with pytest.raises(LastOrganizer):
        check_leaving(Role.ORGANIZER, organizers=1)
    check_leaving(Role.ORGANIZER, organizers=2)
    check_leaving(Role.MEMBER, organizers=1)


def test_organizers_give_any_role_but_keep_one_organizer() -> None:
    check_role_change(Role.ORGANIZER, Role.MEMBER, Role.ORGANIZER, organizers=1)
    check_role_change(Role.ORGANIZER, Role.ORGANIZER, Role.MEMBER, organizers=2)
    with pytest.raises(LastOrganizer):
        check_role_change(Role.ORGANIZER, Role.ORGANIZER, Role.CO_ORGANIZER, organizers=1)


@pytest.mark.parametrize(
    ("target", "new_role", "allowed"),
    [
        (Role.MEMBER, Role.EVENT_ORGANIZER, True),
        (Role.EVENT_ORGANIZER, Role.MEMBER, True),
        (Role.MEMBER, Role.CO_ORGANIZER, False),
        (Role.MEMBER, Role.ORGANIZER, False),
        (Role.CO_ORGANIZER, Role.MEMBER, False),
        (Role.ORGANIZER, Role.MEMBER, False),
    ],
)
def test_co_organizers_move_people_only_below_their_own_rank(target: Role, new_role: Role, allowed: bool) -> None:
    if allowed:
        check_role_change(Role.CO_ORGANIZER, target, new_role, organizers=1)
    else:
        with pytest.raises(NotAllowed):
            check_role_change(Role.CO_ORGANIZER, target, new_role, organizers=1)


def test_removal_rules() -> None:
    check_removal(Role.CO_ORGANIZER, Role.EVENT_ORGANIZER, organizers=1, actor_is_target=False)
    check_removal(Role.ORGANIZER, Role.ORGANIZER, organizers=2, actor_is_target=False)
    with pytest.raises(NotAllowed):
        check_removal(Role.CO_ORGANIZER, Role.CO_ORGANIZER, organizers=1, actor_is_target=False)
    with pytest.raises(NotForYourself):
        check_removal(Role.ORGANIZER, Role.ORGANIZER, organizers=2, actor_is_target=True)


# --- details and answers ---------------------------------------------------------------------------------------


def test_group_details_are_trimmed_and_topics_normalised() -> None:
    details = details_from(name="  Hikers  ", topics=["Hiking", " hiking ", "Trail  Running", ""], city=" ")
    assert details.name == "Hikers"
    assert details.topics == ("hiking", "trail running")
    assert details.city is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"location": Location(91, 0)}, "location"),
        ({"location": Location(0, -180.5)}, "location"),
        ({"location": Location(math.nan, 0)}, "location"),
        ({"questions": [""]}, "questions"),
        ({"questions": ["q"] * 11}, "questions"),
    ],
)
def test_invalid_details_name_their_field(changes: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"name": "Hikers", **changes}
    with pytest.raises(InvalidInput) as refused:
        details_from(**values)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_too_many_topics_are_refused() -> None:
    with pytest.raises(InvalidInput):
        normalize_topics([f"topic {n}" for n in range(21)])


def test_an_approval_group_needs_one_answer_per_question() -> None:
    details = details_from(name="G", join_policy=JoinPolicy.APPROVAL, questions=["Why?", "Where from?"])
    answers = answers_for(details, [" To hike ", "Berlin"])
    assert [(a.question, a.answer) for a in answers] == [("Why?", "To hike"), ("Where from?", "Berlin")]
    for wrong in ([], ["only one"], ["a", "b", "c"]):
        with pytest.raises(InvalidInput) as refused:
            answers_for(details, wrong)
        assert refused.value.field == "answers"
    with pytest.raises(InvalidInput) as refused:
        answers_for(details, ["fine", "  "])
    assert refused.value.field == "answers.1"


def test_an_open_group_ignores_answers() -> None:
    assert answers_for(details_from(name="G", questions=["Why?"]), ["whatever", "more"]) == ()


def test_search_text_folds_case_beyond_ascii() -> None:
    text = search_text(details_from(name="ÜBER UNS", description="Große Straße"))
    assert "über".casefold() in text
    assert "STRASSE".casefold() in text  # the query is folded the same way


def test_a_refusal_names_the_least_role_with_the_right_article() -> None:
    with pytest.raises(NotAllowed, match=r"^Only an organizer or above may edit the group\.$"):
        require(Relation(role=Role.MEMBER), Action.EDIT_GROUP)
    with pytest.raises(NotAllowed, match=r"^Only a co_organizer or above may see join requests\.$"):
        require(Relation(role=Role.EVENT_ORGANIZER), Action.SEE_REQUESTS)


# --- slugs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Berlin Hikers", "berlin-hikers"),
        ("  Café & Crêpes!  ", "cafe-crepes"),
        ("東京", "group"),
        # Letters without an ASCII decomposition are spelt out, not dropped ("strae" was Straße's slug).
        ("Straße", "strasse"),
        ("STRAẞE", "strasse"),
        ("Smørrebrød Ærø", "smorrebrod-aero"),
        ("Łódź Œuvre", "lodz-oeuvre"),
        ("Þórsmörk Đakovo", "thorsmork-dakovo"),
        ("---", "group"),
        ("8c2e1f0e-6b0a-4c1e-9a43-000000000000", "group-8c2e1f0e-6b0a-4c1e-9a43-000000000000"),
    ],
)
def test_slugs_are_url_safe_and_never_look_like_ids(name: str, slug: str) -> None:
    assert slug_base(name) == slug


def test_long_names_make_slugs_of_at_most_60_characters() -> None:
    assert len(slug_base("word " * 40)) <= 60
    assert not slug_base("word " * 40).endswith("-")


def test_a_taken_slug_gets_the_first_free_number() -> None:
    assert pick_slug("hikers", []) == "hikers"
    assert pick_slug("hikers", ["hikers"]) == "hikers-2"
    assert pick_slug("hikers", ["hikers", "hikers-2", "hikers-3"]) == "hikers-4"
    assert len(pick_slug("x" * 60, ["x" * 60])) == 60


# --- geography ----------------------------------------------------------------------------------------------------


def test_berlin_to_paris_is_about_878_km() -> None:
    assert distance_km(BERLIN, PARIS) == pytest.approx(878, abs=3)
    assert distance_km(BERLIN, BERLIN) == 0


def _destination(start: Location, bearing_deg: float, km: float) -> Location:
    """The point `km` away from `start` in direction `bearing_deg` (on the same sphere as distance_km)."""
    angular = km / EARTH_RADIUS_KM
    lat1, lng1, bearing = math.radians(start.lat), math.radians(start.lng), math.radians(bearing_deg)
    lat2 = math.asin(math.sin(lat1) * math.cos(angular) + math.cos(lat1) * math.sin(angular) * math.cos(bearing))
    lng2 = lng1 + math.atan2(
        math.sin(bearing) * math.sin(angular) * math.cos(lat1), math.cos(angular) - math.sin(lat1) * math.sin(lat2)
    )
    return Location(math.degrees(lat2), (math.degrees(lng2) + 540) % 360 - 180)


def _inside(box_point: Location, center: Location, radius_km: float) -> bool:
    box = bounding_box(center, radius_km)
    return box.min_lat <= box_point.lat <= box.max_lat and any(
        west <= box_point.lng <= east for west, east in box.lng_ranges
    )


@given(
    lat=st.floats(-89.0, 89.0),
    lng=st.floats(-180.0, 180.0),
    radius=st.floats(0.1, 1000.0),
    bearing=st.floats(0.0, 360.0),
    fraction=st.floats(0.0, 0.999),
)
def test_every_point_within_the_radius_is_inside_the_bounding_box(
    lat: float, lng: float, radius: float, bearing: float, fraction: float
) -> None:
    center = Location(lat, lng)
    point = _destination(center, bearing, radius * fraction)
    assert _inside(point, center, radius)


def test_a_circle_over_the_antimeridian_gets_two_longitude_ranges() -> None:
    box = bounding_box(Location(-17.7, 179.9), 100)  # Fiji
    assert len(box.lng_ranges) == 2
    assert _inside(Location(-17.7, -179.9), Location(-17.7, 179.9), 100)


def test_a_circle_around_a_pole_spans_every_longitude() -> None:
    box = bounding_box(Location(89.5, 0), 100)
    assert box.max_lat == 90
    assert box.lng_ranges == ((-180.0, 180.0),)


@pytest.mark.parametrize(
    "near",
    [
        *("52.5", "52.5,13.4,1", "abc,13", "91,0", "0,181", "nan,0", "", "-inf,0", "0x10,13"),
        # float() reads these (underscores, full-width and Arabic-Indic digits): no client means them.
        *("5_2,13", "\uff15\uff12,13", "52,1\u0663"),
    ],
)
def test_near_must_be_a_valid_lat_lng_pair(near: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_near(near)
    assert refused.value.field == "near"


def test_near_is_parsed() -> None:
    assert parse_near(" 52.52 , 13.405") == BERLIN
    assert parse_near("+5.252e1,.13405E2") == BERLIN
    assert parse_near("-0.5,10.") == Location(-0.5, 10.0)


@pytest.mark.parametrize("radius", [0, -1, 1000.1, math.inf, math.nan])
def test_radius_must_be_positive_and_local(radius: float) -> None:
    with pytest.raises(InvalidInput):
        valid_radius(radius)


def test_every_domain_error_has_an_http_status() -> None:
    """A domain error missing from api.STATUS_OF would leave as a bare 400."""
    from gatherly.groups import api, domain
    from gatherly.kernel.errors import DomainError

    errors = {
        value
        for value in vars(domain).values()
        if isinstance(value, type) and issubclass(value, DomainError) and value.__module__ == domain.__name__
    }
    assert errors and errors == set(api.STATUS_OF)


# --- issue 15: stepping down, decisions' messages, invitations, sorting ----------------------------------------------


def test_leaders_step_down_but_the_last_organizer_may_not() -> None:
    for role in (Role.CO_ORGANIZER, Role.EVENT_ORGANIZER):
        check_stepping_down(role, organizers=1)
    check_stepping_down(Role.ORGANIZER, organizers=2)
    with pytest.raises(LastOrganizer):
        check_stepping_down(Role.ORGANIZER, organizers=1)


def test_a_decision_message_is_trimmed_optional_and_bounded() -> None:
    assert decision_message(None) is None
    assert decision_message("   ") is None
    assert decision_message("  Welcome!  ") == "Welcome!"
    with pytest.raises(InvalidInput) as refused:
        decision_message("x" * 1001)
    assert refused.value.field == "message"


def test_invitation_terms_default_bound_and_make_email_invitations_single_use() -> None:
    link = invitation_terms(None, None, None)
    assert (link.expires_in, link.max_uses, link.email) == (timedelta(days=7), None, None)
    mailed = invitation_terms(3, None, "  Sam@Example.COM ")
    assert (mailed.expires_in, mailed.max_uses, mailed.email) == (timedelta(days=3), 1, "sam@example.com")
    for days, uses, email, field in [
        (0, None, None, "expires_in_days"),
        (31, None, None, "expires_in_days"),
        (7, 0, None, "max_uses"),
        (7, 1001, None, "max_uses"),
        (7, 5, "sam@example.com", "max_uses"),
        (7, None, "not an address", "email"),
        (7, None, "a@b", "email"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            invitation_terms(days, uses, email)
        assert refused.value.field == field


def test_an_invitation_is_usable_until_it_expires_is_used_up_or_is_revoked() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    invitation = Invitation("i", GroupId("g"), UserId("ann"), now, now + timedelta(days=1), max_uses=2, uses=1)
    invitation.check_usable(now, None)
    for unusable in (
        replace(invitation, uses=2),
        replace(invitation, revoked_at=now),
    ):
        with pytest.raises(InvitationUnusable):
            unusable.check_usable(now, None)
    with pytest.raises(InvitationUnusable):
        invitation.check_usable(now + timedelta(days=1), None)
    replace(invitation, max_uses=None, uses=10_000).check_usable(now, None)


def test_an_email_invitation_is_usable_only_by_the_person_with_that_confirmed_address() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    mailed = Invitation(
        "i", GroupId("g"), UserId("ann"), now, now + timedelta(days=1), max_uses=1, uses=0, email="sam@example.com"
    )
    mailed.check_usable(now, address_hash(" Sam@Example.com"))
    for someone_else in (address_hash("tom@example.com"), None):
        with pytest.raises(InvitationForAnotherAddress):
            mailed.check_usable(now, someone_else)
    # A link invitation is for whoever holds it, whatever their address.
    replace(mailed, email=None).check_usable(now, address_hash("tom@example.com"))


def test_an_invitation_whose_address_was_erased_with_its_account_admits_nobody() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    redacted = Invitation("i", GroupId("g"), UserId("ann"), now, now + timedelta(days=1), max_uses=1, uses=0)
    redacted = replace(redacted, redacted_at=now)  # no address left: it must not read as a link invitation
    for anyone in (address_hash("sam@example.com"), None):
        with pytest.raises(InvitationUnusable, match="deleted"):
            redacted.check_usable(now, anyone)


def test_the_daily_bound_on_email_invitations_says_when_a_place_frees_up() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    check_invitation_quota(4, now - timedelta(hours=1), 5, now, by="from one person")
    with pytest.raises(TooManyInvitations) as refused:
        check_invitation_quota(5, now - timedelta(hours=1), 5, now, by="from one person")
    assert refused.value.retry_after == 23 * 3600
    with pytest.raises(TooManyInvitations) as refused:
        check_invitation_quota(5, now - timedelta(days=1) + timedelta(milliseconds=1), 5, now, by="for one group")
    assert refused.value.retry_after == 1


def test_a_decision_message_refuses_bidi_overrides_controls_and_invisible_only_text() -> None:
    assert decision_message("Welcome!\nSee you Saturday.\t:)") == "Welcome!\nSee you Saturday.\t:)"
    assert decision_message("مرحبا ‍👋") is not None  # joiners stay: scripts and emoji need them
    for hostile in ("Wel‮come", "evil⁦text", "bell", "esc[2J", "c1", "​⁠"):
        with pytest.raises(InvalidInput) as refused:
            decision_message(hostile)
        assert refused.value.field == "message"


def test_groups_sort_nearest_first_near_a_point_and_newest_first_otherwise() -> None:
    berlin = Location(52.52, 13.405)
    assert group_sort(None, None) is GroupSort.NEWEST
    assert group_sort(None, berlin) is GroupSort.DISTANCE
    assert group_sort(GroupSort.NAME, berlin) is GroupSort.NAME
    with pytest.raises(InvalidInput) as refused:
        group_sort(GroupSort.DISTANCE, None)
    assert refused.value.field == "sort"


def test_relevance_is_asked_for_with_a_text_and_never_the_default() -> None:
    berlin = Location(52.52, 13.405)
    assert group_sort(None, None, "hikers") is GroupSort.NEWEST
    assert group_sort(None, berlin, "hikers") is GroupSort.DISTANCE
    assert group_sort(GroupSort.RELEVANCE, berlin, "hikers") is GroupSort.RELEVANCE
    for text in (None, ""):
        with pytest.raises(InvalidInput) as refused:
            group_sort(GroupSort.RELEVANCE, berlin, text)
        assert refused.value.field == "sort"


def test_nearest_is_the_former_name_of_sort_distance() -> None:
    assert GroupSort("nearest") is GroupSort("distance") is GroupSort.DISTANCE
    assert [sort.value for sort in GroupSort] == ["relevance", "newest", "members", "distance", "name"]
    with pytest.raises(ValueError):
        GroupSort("nearest_first")


# --- who succeeds the last organizer whose account is deleted -------------------------------------------------------

DAY1 = datetime(2026, 1, 1, tzinfo=UTC)


def _tenure(user: str, role: Role, days: int) -> Tenure:
    return Tenure(UserId(user), role, DAY1 + timedelta(days=days))


def test_the_longest_standing_co_organizer_succeeds_before_anyone_who_joined_earlier() -> None:
    remaining = [
        _tenure("old-member", Role.MEMBER, 0),
        _tenure("old-event-organizer", Role.EVENT_ORGANIZER, 1),
        _tenure("new-co", Role.CO_ORGANIZER, 9),
        _tenure("first-co", Role.CO_ORGANIZER, 5),
    ]
    assert successor(remaining) == "first-co"


def test_without_a_co_organizer_the_longest_standing_member_succeeds_whatever_their_role() -> None:
    remaining = [_tenure("later", Role.EVENT_ORGANIZER, 3), _tenure("earliest", Role.MEMBER, 1)]
    assert successor(remaining) == "earliest"


def test_nobody_left_means_no_successor() -> None:
    assert successor([]) is None


def test_a_tie_in_joining_time_goes_to_the_smaller_id_whatever_the_order() -> None:
    a, b = _tenure("a", Role.MEMBER, 2), _tenure("b", Role.MEMBER, 2)
    assert successor([b, a]) == successor([a, b]) == "a"
