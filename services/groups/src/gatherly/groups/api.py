"""HTTP routes of the groups service: parse, call a use case, shape the response.

Domain errors get their HTTP status here, in STATUS_OF; the kernel writes them as problem+json (InvalidInput is
the kernel's own, 422). Who may see what is written down at the top of domain.py. Request bodies refuse fields
they do not know (422), as PATCH always did."""

from __future__ import annotations

import uuid
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Response

from gatherly.contracts.users import ImageVariants
from gatherly.groups import service
from gatherly.groups.domain import (
    DEFAULT_RADIUS_KM,
    MAX_RADIUS_KM,
    AccountDeleted,
    AlreadyRequested,
    Banned,
    BanNotFound,
    GroupCard,
    GroupNotFound,
    GroupSearch,
    GroupSort,
    Invitation,
    InvitationForAnotherAddress,
    InvitationLimits,
    InvitationNotFound,
    InvitationUnusable,
    JoinRequestNotFound,
    LastOrganizer,
    Location,
    LoginRequired,
    NeverSeen,
    NotAllowed,
    NotAMember,
    NotForYourself,
    Relation,
    Role,
    TooManyInvitations,
    UserId,
    details_from,
    group_sort,
    invitation_terms,
    normalize_topic,
    parse_near,
    valid_location,
    valid_radius,
)
from gatherly.groups.schemas import (
    NULLABLE_CHANGES,
    AnnouncementBody,
    AnnouncementOut,
    AnswerOut,
    BanOut,
    CountedPage,
    DecisionBody,
    DecisionOut,
    DeletionOut,
    GroupChanges,
    GroupOut,
    GroupsPage,
    GroupSummaryJson,
    InvitationOut,
    JoinBody,
    JoinOut,
    JoinRequestOut,
    MemberOut,
    MyMembership,
    MyRequestOut,
    NewGroup,
    NewInvitation,
    NewInvitationOut,
    RoleBody,
    groups_page_json,
)
from gatherly.groups.service import GroupView
from gatherly.groups.store import (
    BanView,
    GroupsUnitOfWork,
    MemberView,
    MyRequestView,
    RequestView,
    reading,
    unit_of_work,
)
from gatherly.kernel.auth import CurrentUser, MaybeUser
from gatherly.kernel.errors import DomainError, InvalidInput, Unauthorized
from gatherly.kernel.openapi import problems
from gatherly.kernel.read_models import variants_json
from gatherly.kernel.runtime import ServiceContext, service_context
from gatherly.kernel.web import (
    LocationBody,
    Page,
    PageRequest,
    QueryNumber,
    encode_cursor,
    page_request,
    statuses_from,
)

# Each domain error's HTTP status, in one place.
STATUS_OF: dict[type[DomainError], int] = {
    GroupNotFound: 404,
    NotAMember: 404,
    JoinRequestNotFound: 404,
    LoginRequired: 401,
    AccountDeleted: 401,
    NotAllowed: 403,
    Banned: 403,
    LastOrganizer: 409,
    NotForYourself: 409,
    AlreadyRequested: 409,
    NeverSeen: 404,
    BanNotFound: 404,
    InvitationNotFound: 404,
    InvitationUnusable: 410,
    InvitationForAnotherAddress: 403,
    TooManyInvitations: 429,
}


router = APIRouter(prefix="/api/groups", tags=["groups"], route_class=statuses_from(STATUS_OF))


async def _uow(context: ServiceContext = Depends(service_context)) -> GroupsUnitOfWork:
    return unit_of_work(context)


def _summary(card: GroupCard, banner: ImageVariants | None, distance_km: float | None = None) -> GroupSummaryJson:
    """A group's card as GroupSummary's fields (GroupOut validates them; a list dumps them as they are)."""
    location = card.location
    return {
        "id": card.id,
        "slug": card.slug,
        "name": card.name,
        "city": card.city,
        "location": {"lat": location.lat, "lng": location.lng} if location else None,
        "topics": list(card.topics),
        "member_count": card.member_count,
        "visibility": card.visibility,
        "join_policy": card.join_policy,
        "banner": variants_json(banner),
        "distance_km": round(distance_km, 3) if distance_km is not None else None,
    }


def _group_out(view: GroupView) -> GroupOut:
    group, details, relation = view.group, view.group.details, view.relation
    standing = relation.standing if relation else None
    return GroupOut(
        **_summary(group.card(), view.banner),
        description=details.description,
        questions=list(details.questions),
        banner_image_id=details.banner_image_id,
        created_at=group.created_at,
        updated_at=group.updated_at,
        my_membership=MyMembership(role=relation.role, status=standing) if relation and standing else None,
    )


def _member_out(member: MemberView) -> MemberOut:
    return MemberOut(
        user_id=member.user_id,
        display_name=member.display_name,
        avatar=member.avatar,
        role=member.role,
        joined_at=member.joined_at,
    )


def _request_out(request: RequestView) -> JoinRequestOut:
    return JoinRequestOut(
        user_id=request.user_id,
        display_name=request.display_name,
        avatar=request.avatar,
        answers=[AnswerOut(question=a.question, answer=a.answer) for a in request.answers],
        requested_at=request.requested_at,
    )


def _my_request_out(request: MyRequestView) -> MyRequestOut:
    return MyRequestOut(
        group_id=request.group_id,
        slug=request.slug,
        group_name=request.group_name,
        answers=[AnswerOut(question=a.question, answer=a.answer) for a in request.answers],
        requested_at=request.requested_at,
    )


def _ban_out(ban: BanView) -> BanOut:
    return BanOut(
        user_id=ban.user_id,
        display_name=ban.display_name,
        banned_by=ban.banned_by,
        banned_by_name=ban.banned_by_name,
        banned_at=ban.banned_at,
    )


def _invitation_fields(invitation: Invitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "created_by": invitation.created_by,
        "created_at": invitation.created_at,
        "expires_at": invitation.expires_at,
        "max_uses": invitation.max_uses,
        "uses": invitation.uses,
        "email": invitation.email,
        "revoked": invitation.revoked_at is not None,
        "account_deleted": invitation.redacted_at is not None,
    }


def _next(position: dict[str, Any] | None) -> str | None:
    return encode_cursor(position) if position else None


# --- groups ---------------------------------------------------------------------------------------------------------


def _location(body: LocationBody, field: str) -> Location:
    return valid_location(Location(body.lat, body.lng), field)


@router.post("", status_code=201)
async def create_group(body: NewGroup, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)) -> GroupOut:
    details = details_from(
        name=body.name,
        description=body.description,
        topics=body.topics,
        city=body.city,
        location=_location(body.location, "location") if body.location else None,
        visibility=body.visibility,
        join_policy=body.join_policy,
        questions=body.questions,
    )
    group = await service.create_group(uow, UserId(caller.user_id), details)
    return _group_out(GroupView(group, None, Relation(role=Role.ORGANIZER)))


@router.get("", response_model=GroupsPage)
async def search_groups(
    caller: MaybeUser,
    q: str | None = Query(None, max_length=200, description="Words in the name or description (any case)."),
    topic: str | None = Query(None, max_length=50),
    near: str | None = Query(None, description="<lat>,<lng>: groups around this point, nearest first."),
    radius_km: QueryNumber | None = Query(
        None, description=f"With near; default {DEFAULT_RADIUS_KM:g}, at most {MAX_RADIUS_KM:g}."
    ),
    member: Literal["me"] | None = Query(
        None, description="me: only groups the caller belongs to (the page then carries their `total`)."
    ),
    pending: Literal["me"] | None = Query(
        None,
        description="me: only groups the caller asked to join and waits for (the page then carries their `total`); "
        "not with member=me.",
    ),
    sort: GroupSort | None = Query(
        None,
        description="relevance (needs q: the name starting with q first, then the names containing it, then the "
        "rest; newest first among equals) | newest | members (most first) | distance (nearest first, needs near; "
        "`nearest` is taken too) | name; default newest, distance with near (relevance only when asked for).",
    ),
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Response:
    if radius_km is not None and near is None:
        raise InvalidInput("radius_km needs near=<lat>,<lng>.", field="radius_km")
    if member == "me" and caller is None:
        raise Unauthorized("Log in to list your own groups.")
    if pending == "me" and caller is None:
        raise Unauthorized("Log in to list the groups you asked to join.")
    if member == "me" and pending == "me":
        # No group is both (an approved request becomes the membership): refused rather than always empty.
        raise InvalidInput("Give member=me or pending=me, not both.", field="pending")
    center = parse_near(near) if near is not None else None
    text = (q.strip() or None) if q else None
    criteria = GroupSearch(
        text=text,
        topic=(normalize_topic(topic) or None) if topic else None,
        near=center,
        radius_km=valid_radius(radius_km) if radius_km is not None else DEFAULT_RADIUS_KM,
        member=UserId(caller.user_id) if member == "me" and caller else None,
        pending=UserId(caller.user_id) if pending == "me" and caller else None,
        sort=group_sort(sort, center, text),
    )
    async with reading(context.db) as stores:
        listed, position, total = await service.search_groups(stores, criteria, page)
    return Response(groups_page_json(listed, _next(position), total), media_type="application/json")


@router.get("/{group}", responses=problems(404))
async def get_group(group: str, caller: MaybeUser, context: ServiceContext = Depends(service_context)) -> GroupOut:
    async with reading(context.db) as stores:
        view = await service.view_group(stores, group, UserId(caller.user_id) if caller else None)
    return _group_out(view)


@router.patch("/{group}", responses=problems(403, 404))
async def update_group(
    group: str, body: GroupChanges, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)
) -> GroupOut:
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in NULLABLE_CHANGES:
            raise InvalidInput(f"{name} cannot be null.", field=name)
        if isinstance(value, LocationBody):
            value = _location(value, name)
        changes[name] = str(value) if isinstance(value, uuid.UUID) else value
    return _group_out(await service.update_group(uow, group, UserId(caller.user_id), changes))


@router.delete("/{group}", status_code=202, responses=problems(403, 404))
async def delete_group(group: str, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)) -> DeletionOut:
    """Hides the group and starts its deletion saga (upcoming events are cancelled by the events service)."""
    deletion = await service.delete_group(uow, group, UserId(caller.user_id))
    return DeletionOut(id=deletion.group_id, status="deleted", deletion=deletion.status)


# --- membership -----------------------------------------------------------------------------------------------------


@router.post("/{group}/join", responses=problems(403, 404, 409, 410))
async def join_group(
    group: str, caller: CurrentUser, body: JoinBody | None = None, uow: GroupsUnitOfWork = Depends(_uow)
) -> JoinOut:
    """Joins an open group, or asks to join one that approves its members (a second request while one is pending
    is refused: 409). With `invitation`, joins without approval."""
    answers, invitation = (body.answers, body.invitation) if body else ([], None)
    return JoinOut(status=await service.join_group(uow, group, UserId(caller.user_id), answers, invitation))


@router.delete("/{group}/members/me", status_code=204, responses=problems(404, 409))
async def leave_group(group: str, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)) -> Response:
    await service.leave_group(uow, group, UserId(caller.user_id))
    return Response(status_code=204)


@router.post("/{group}/members/me/step-down", responses=problems(404, 409))
async def step_down(group: str, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)) -> MemberOut:
    """A co-organizer, event organizer or (not the last) organizer becomes a member, staying in the group."""
    return _member_out(await service.step_down(uow, group, UserId(caller.user_id)))


@router.get("/{group}/members", responses=problems(403, 404))
async def list_members(
    group: str,
    caller: MaybeUser,
    role: Role | None = Query(None, description="Only members with this role (`total` counts them)."),
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> CountedPage[MemberOut]:
    async with reading(context.db) as stores:
        listing = await service.list_members(stores, group, UserId(caller.user_id) if caller else None, page, role)
    return CountedPage(
        items=[_member_out(m) for m in listing.items], next_cursor=_next(listing.position), total=listing.total
    )


@router.put("/{group}/members/{user_id}/role", responses=problems(403, 404, 409))
async def change_role(
    group: str, user_id: str, body: RoleBody, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)
) -> MemberOut:
    member = await service.change_role(uow, group, UserId(caller.user_id), UserId(user_id), body.role)
    return _member_out(member)


@router.delete("/{group}/members/{user_id}", status_code=204, responses=problems(403, 404, 409))
async def remove_member(
    group: str,
    user_id: str,
    caller: CurrentUser,
    ban: bool = Query(False, description="Also keep the person from joining again."),
    uow: GroupsUnitOfWork = Depends(_uow),
) -> Response:
    await service.remove_member(uow, group, UserId(caller.user_id), UserId(user_id), ban=ban)
    return Response(status_code=204)


# --- join requests --------------------------------------------------------------------------------------------------


@router.get("/requests/mine")
async def my_requests(
    caller: CurrentUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> CountedPage[MyRequestOut]:
    """The caller's own pending join requests, oldest first."""
    async with reading(context.db) as stores:
        listing = await service.my_requests(stores, UserId(caller.user_id), page)
    return CountedPage(
        items=[_my_request_out(r) for r in listing.items], next_cursor=_next(listing.position), total=listing.total
    )


@router.get("/{group}/requests", responses=problems(403, 404))
async def list_requests(
    group: str,
    caller: CurrentUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> CountedPage[JoinRequestOut]:
    async with reading(context.db) as stores:
        listing = await service.list_requests(stores, group, UserId(caller.user_id), page)
    return CountedPage(
        items=[_request_out(r) for r in listing.items], next_cursor=_next(listing.position), total=listing.total
    )


@router.post("/{group}/requests/{user_id}/approve", responses=problems(403, 404, 409))
async def approve_request(
    group: str,
    user_id: str,
    caller: CurrentUser,
    body: DecisionBody | None = None,
    uow: GroupsUnitOfWork = Depends(_uow),
) -> DecisionOut:
    """Admits the requester; `message` is shown to them with the news."""
    message = body.message if body else None
    await service.approve_request(uow, group, UserId(caller.user_id), UserId(user_id), message)
    return DecisionOut(user_id=user_id, status="member")


@router.post("/{group}/requests/{user_id}/deny", responses=problems(403, 404, 409))
async def deny_request(
    group: str,
    user_id: str,
    caller: CurrentUser,
    body: DecisionBody | None = None,
    uow: GroupsUnitOfWork = Depends(_uow),
) -> DecisionOut:
    """Declines the request; `message` is shown to the applicant with the news."""
    message = body.message if body else None
    await service.deny_request(uow, group, UserId(caller.user_id), UserId(user_id), message)
    return DecisionOut(user_id=user_id, status="denied")


# --- bans -----------------------------------------------------------------------------------------------------------


@router.get("/{group}/bans", responses=problems(403, 404))
async def list_bans(
    group: str,
    caller: CurrentUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> CountedPage[BanOut]:
    """Who is banned, by whom and when, newest first (organizers and co-organizers)."""
    async with reading(context.db) as stores:
        listing = await service.list_bans(stores, group, UserId(caller.user_id), page)
    return CountedPage(
        items=[_ban_out(b) for b in listing.items], next_cursor=_next(listing.position), total=listing.total
    )


@router.delete("/{group}/bans/{user_id}", status_code=204, responses=problems(403, 404))
async def lift_ban(group: str, user_id: str, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)) -> Response:
    """The person may join (or ask to) again; they do not become a member by it."""
    await service.lift_ban(uow, group, UserId(caller.user_id), UserId(user_id))
    return Response(status_code=204)


# --- invitations ----------------------------------------------------------------------------------------------------


@router.post("/{group}/invitations", status_code=201, responses=problems(403, 404, 429))
async def create_invitation(
    group: str,
    body: NewInvitation,
    caller: CurrentUser,
    context: ServiceContext = Depends(service_context),
    uow: GroupsUnitOfWork = Depends(_uow),
) -> NewInvitationOut:
    """An invitation link (expiring, with an optional use limit), or with `email` one sent to that address.
    Whoever joins with it joins without approval; an email invitation only the person whose confirmed email is
    that address. Email invitations are bounded per inviter and per group a day (429 with Retry-After). The
    token is in this answer only."""
    terms = invitation_terms(body.expires_in_days, body.max_uses, body.email)
    settings = context.settings
    limits = InvitationLimits(
        per_inviter=settings.invitation_emails_per_inviter_per_day,
        per_group=settings.invitation_emails_per_group_per_day,
    )
    issued = await service.invite(uow, group, UserId(caller.user_id), terms, limits)
    link = f"{context.settings.effective_public_url}/groups/{issued.slug}?{urlencode({'invitation': issued.token})}"
    return NewInvitationOut(**_invitation_fields(issued.invitation), token=issued.token, link=link)


@router.get("/{group}/invitations", responses=problems(403, 404))
async def list_invitations(
    group: str,
    caller: CurrentUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Page[InvitationOut]:
    """The group's invitations, newest first, revoked and expired ones included (never their tokens)."""
    async with reading(context.db) as stores:
        found, position = await service.list_invitations(stores, group, UserId(caller.user_id), page)
    return Page(items=[InvitationOut(**_invitation_fields(i)) for i in found], next_cursor=_next(position))


@router.delete("/{group}/invitations/{invitation_id}", status_code=204, responses=problems(403, 404))
async def revoke_invitation(
    group: str, invitation_id: str, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)
) -> Response:
    """Nobody can join with it any more (revoking twice is harmless)."""
    await service.revoke_invitation(uow, group, UserId(caller.user_id), invitation_id)
    return Response(status_code=204)


# --- announcements --------------------------------------------------------------------------------------------------


@router.post("/{group}/announcements", status_code=202, responses=problems(403, 404))
async def send_announcement(
    group: str, body: AnnouncementBody, caller: CurrentUser, uow: GroupsUnitOfWork = Depends(_uow)
) -> AnnouncementOut:
    """Every member is told by the notifications service (in-app, and by email per their preferences)."""
    announcement_id = await service.announce(uow, group, UserId(caller.user_id), body.subject, body.body)
    return AnnouncementOut(announcement_id=announcement_id)
