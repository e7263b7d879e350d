"""HTTP routes of the events service: parse, call a use case, shape the response.

The one table of refusals and their statuses is REFUSALS below; the kernel's handlers turn what it yields (and
any kernel error, e.g. a bad cursor) into problem+json."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from gatherly.events import service
from gatherly.events.calendars import calendar_of, import_entries
from gatherly.events.domain import (
    Comment,
    CommentNotFound,
    CoverNotReady,
    EventCancelled,
    EventDetails,
    EventNotFound,
    EventStarted,
    FeedNotFound,
    GroupId,
    GroupNotFound,
    ImportOutcome,
    InvalidEvent,
    Location,
    LoginRequired,
    NotALeader,
    NotAMember,
    NotEnoughSeats,
    NotGoing,
    NotTheAuthor,
    Refusal,
    RsvpWindowClosed,
    SearchOrder,
    UserId,
    Venue,
    details_from,
    search_from,
)
from gatherly.events.schemas import (
    NULLABLE_CHANGES,
    AttendeeOut,
    CheckInOut,
    CommentBody,
    CommentOut,
    EventChanges,
    EventOut,
    EventsPageJson,
    EventSummary,
    FeedOut,
    GroupRef,
    ImportedOut,
    ImportReport,
    MyRsvpOut,
    NewEvent,
    QueryTime,
    RsvpBody,
    VenueBody,
    events_page_json,
)
from gatherly.events.service import CheckIn, EventView, MyRsvp, Scope
from gatherly.events.store import EventsUnitOfWork, reading, unit_of_work
from gatherly.kernel.auth import CurrentUser, MaybeUser
from gatherly.kernel.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unauthorized
from gatherly.kernel.openapi import problems
from gatherly.kernel.routes import FastRoute
from gatherly.kernel.runtime import ServiceContext, service_context
from gatherly.kernel.web import LocationBody, Page, PageRequest, QueryNumber, encode_cursor, page_request

# Each refusal of domain.py and the problem it becomes.
REFUSALS: dict[type[Refusal], type[DomainError]] = {
    EventNotFound: NotFound,
    GroupNotFound: NotFound,
    CommentNotFound: NotFound,
    FeedNotFound: NotFound,
    LoginRequired: Unauthorized,
    NotALeader: Forbidden,
    NotAMember: Forbidden,
    NotTheAuthor: Forbidden,
    EventCancelled: Conflict,
    EventStarted: Conflict,
    RsvpWindowClosed: Conflict,
    NotEnoughSeats: Conflict,
    NotGoing: Conflict,
    CoverNotReady: Conflict,
    InvalidEvent: InvalidInput,
}


def as_problem(refusal: Refusal) -> DomainError:
    problem = REFUSALS[type(refusal)]
    if isinstance(refusal, InvalidEvent):
        return InvalidInput(refusal.detail, field=refusal.field)
    return problem(refusal.detail)


class EventsRoute(FastRoute):
    """Turns the domain's refusals into the kernel's problem errors, per REFUSALS."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def refusals_as_problems(request: Request) -> Response:
            try:
                return await handle(request)
            except Refusal as refusal:
                raise as_problem(refusal) from refusal

        return refusals_as_problems


router = APIRouter(prefix="/api/events", tags=["events"], route_class=EventsRoute)
calendar_router = APIRouter(prefix="/api/calendar", tags=["calendars"], route_class=EventsRoute)

CALENDAR = "text/calendar; charset=utf-8"


async def _uow(request: Request) -> EventsUnitOfWork:
    # The context straight from the request rather than through a sub-dependency: one level less of FastAPI's
    # dependency solving on every write (solving them was one of the largest items of an RSVP's profile).
    return unit_of_work(await service_context(request))


# --- shaping ------------------------------------------------------------------------------------------------------


def _venue(body: VenueBody | None) -> Venue | None:
    if body is None:
        return None
    location = Location(body.location.lat, body.location.lng) if body.location else None
    return Venue(body.name, body.address, location)


def _venue_out(venue: Venue | None) -> VenueBody | None:
    if venue is None:
        return None
    location = LocationBody(lat=venue.location.lat, lng=venue.location.lng) if venue.location else None
    return VenueBody(name=venue.name, address=venue.address, location=location)


def _my_rsvp(mine: MyRsvp | None) -> MyRsvpOut | None:
    if mine is None:
        return None
    return MyRsvpOut(status=mine.status, guests=mine.guests, waitlist_position=mine.waitlist_position)


def _event_out(view: EventView) -> EventOut:
    event, details = view.event, view.event.details
    return EventOut(
        id=event.id,
        group=GroupRef(id=view.group.id, name=view.group.name),
        title=details.title,
        description=details.description,
        starts_at=details.starts_at,
        ends_at=details.ends_at,
        timezone=details.timezone,
        venue=_venue_out(details.venue),
        online=details.online_url is not None,
        online_url=details.online_url if view.going else None,
        capacity=details.capacity,
        guest_limit=details.guest_limit,
        rsvp_opens_at=details.rsvp_opens_at,
        rsvp_closes_at=details.rsvp_closes_at,
        cover_image_id=details.cover_image_id,
        cover=view.cover,
        going_count=event.going_count,
        waitlist_count=event.waitlist_count,
        attendance=view.attendance,
        status=event.status,
        my_rsvp=_my_rsvp(view.my_rsvp),
        series_id=event.series_id,
        created_by=event.created_by,
        created_at=event.created_at,
        updated_at=event.updated_at,
    )


def _details(body: NewEvent) -> EventDetails:
    values = body.model_dump(exclude={"group_id", "venue", "recurrence"})
    return details_from(**values, venue=_venue(body.venue))


async def _view(context: ServiceContext, event_id: str, caller: UserId | None) -> EventOut:
    async with reading(context.db) as stores:
        return _event_out(await service.view_event(stores, event_id, caller))


# --- events -------------------------------------------------------------------------------------------------------


@router.post("", status_code=201, responses=problems(403, 404))
async def schedule_event(
    body: NewEvent,
    caller: CurrentUser,
    uow: EventsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> EventOut:
    """Leaders of the group only (organizer, co_organizer, event_organizer). With `recurrence`: a series, whose
    first occurrence is returned."""
    event = await service.schedule_event(
        uow, UserId(caller.user_id), GroupId(body.group_id), _details(body), body.recurrence
    )
    return await _view(context, event.id, UserId(caller.user_id))


@router.get("", response_model=Page[EventSummary], responses=problems(401))
async def search_events(
    caller: MaybeUser,
    near: str | None = Query(
        None, max_length=64, description="<lat>,<lng>: events around this point (with venue locations)."
    ),
    radius_km: QueryNumber | None = Query(None, description="With near: how far to look; default 50, at most 1000."),
    q: str | None = Query(None, max_length=200, description="Words in the title or description (any case)."),
    topic: str | None = Query(None, max_length=50, description="A topic of the event's group."),
    group_id: str | None = Query(None, max_length=36),
    starts_from: QueryTime | None = Query(None, alias="from", description="Starting at or after (default: now)."),
    starts_before: QueryTime | None = Query(None, alias="to", description="Starting before."),
    attending: Literal["me"] | None = Query(None, description="me: only events you are going to."),
    sort: SearchOrder | None = Query(None, description="start (default) or distance (default with near)."),
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Response:
    """Scheduled events of public groups and of the caller's groups, soonest first (or nearest first)."""
    criteria = search_from(
        caller=UserId(caller.user_id) if caller else None,
        now=context.clock.now(),
        starts_from=starts_from,
        starts_before=starts_before,
        text=q,
        topic=topic,
        group_id=group_id,
        near=near,
        radius_km=radius_km,
        attending_me=attending == "me",
        order=sort,
    )
    async with reading(context.db) as stores:
        listed, position = await service.search_events(stores, criteria, page)
    page_json: EventsPageJson = {"items": listed, "next_cursor": encode_cursor(position) if position else None}
    return Response(events_page_json(page_json), media_type="application/json")


@router.get("/{event_id}", responses=problems(404))
async def get_event(event_id: str, caller: MaybeUser, context: ServiceContext = Depends(service_context)) -> EventOut:
    return await _view(context, event_id, UserId(caller.user_id) if caller else None)


@router.patch("/{event_id}", responses=problems(403, 404, 409))
async def update_event(
    event_id: str,
    body: EventChanges,
    caller: CurrentUser,
    scope: Scope = Query(Scope.THIS, description="Of a series: this occurrence, or it and all later ones."),
    uow: EventsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> EventOut:
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in NULLABLE_CHANGES:
            raise InvalidInput(f"{name} cannot be null.", field=name)
        changes[name] = _venue(value) if name == "venue" else value
    await service.update_event(uow, event_id, UserId(caller.user_id), changes, scope)
    return await _view(context, event_id, UserId(caller.user_id))


@router.post("/{event_id}/cancel", responses=problems(403, 404, 409))
async def cancel_event(
    event_id: str,
    caller: CurrentUser,
    scope: Scope = Query(Scope.THIS, description="Of a series: this occurrence, or it and all later ones."),
    uow: EventsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> EventOut:
    await service.cancel_event(uow, event_id, UserId(caller.user_id), scope)
    return await _view(context, event_id, UserId(caller.user_id))


class PayloadTooLarge(DomainError):
    status = 413
    title = "Payload too large"


# An .ics of a few years of a group's history is tens of kilobytes; this leaves room and bounds the parse (the
# kernel's request limit is the same for this route: checked here again for bodies sent without a length).
MAX_IMPORT_BYTES = 1024 * 1024


async def _limited_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is longer than `limit` (not read to the end first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The file is larger than {limit // 1024} KiB.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"The file is larger than {limit // 1024} KiB.")
    return bytes(body)


@router.post(
    "/import",
    responses=problems(403, 404, 413),
    openapi_extra={"requestBody": {"required": True, "content": {"text/calendar": {"schema": {"type": "string"}}}}},
)
async def import_events(
    request: Request,
    caller: CurrentUser,
    group_id: str = Query(max_length=36, description="The group the events go to; its leaders only."),
    uow: EventsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> ImportReport:
    """A calendar file (text/calendar) from another platform: its VEVENTs become the group's events (past ones as
    history). A UID imported before updates its event instead of duplicating it. The report lists what was
    created, updated and skipped, with reasons."""
    async with reading(context.db) as stores:  # who may import is known before the file is read and parsed
        await service.leader_group(stores, UserId(caller.user_id), GroupId(group_id))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "text/calendar":
        raise InvalidInput("Send the file as text/calendar.", field="body")
    entries = import_entries(await _limited_body(request, MAX_IMPORT_BYTES), context.clock.now())
    results = await service.import_events(uow, UserId(caller.user_id), GroupId(group_id), entries)
    report: dict[ImportOutcome, list[ImportedOut]] = {outcome: [] for outcome in ImportOutcome}
    for result in results:
        report[result.outcome].append(ImportedOut(uid=result.uid, event_id=result.event_id, reason=result.reason))
    return ImportReport(
        created=report[ImportOutcome.CREATED],
        updated=report[ImportOutcome.UPDATED],
        skipped=report[ImportOutcome.SKIPPED],
    )


# --- RSVPs --------------------------------------------------------------------------------------------------------


@router.put("/{event_id}/rsvp", responses=problems(403, 404, 409))
async def respond_to_event(
    event_id: str, body: RsvpBody, caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)
) -> MyRsvpOut:
    """Members of the group only. Full: waitlisted, first come first served; seats freed later go to the
    waitlist's head automatically."""
    mine = await service.respond(uow, event_id, UserId(caller.user_id), body.response, body.guests)
    out = _my_rsvp(mine)
    assert out is not None
    return out


@router.get("/{event_id}/attendees", responses=problems(403, 404))
async def list_attendees(
    event_id: str,
    caller: MaybeUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Page[AttendeeOut]:
    """Going first, then the waitlist in its order."""
    async with reading(context.db) as stores:
        rows, position = await service.list_attendees(
            stores, event_id, UserId(caller.user_id) if caller else None, page
        )
    items = [
        AttendeeOut(
            user_id=r.rsvp.user_id,
            display_name=r.display_name,
            avatar=r.avatar,
            guests=r.rsvp.guests,
            status=r.rsvp.status.value,
            waitlist_position=r.position,
        )
        for r in rows
    ]
    return Page(items=items, next_cursor=encode_cursor(position) if position else None)


# --- comments and check-in ------------------------------------------------------------------------------------------


def _comment_out(comment: Comment) -> CommentOut:
    return CommentOut(
        id=comment.id,
        author_id=comment.author_id,
        body=comment.body,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
    )


@router.get("/{event_id}/comments", responses=problems(403, 404))
async def list_comments(
    event_id: str,
    caller: CurrentUser,
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Page[CommentOut]:
    """Members of the group; oldest first."""
    async with reading(context.db) as stores:
        found, position = await service.list_comments(stores, event_id, UserId(caller.user_id), page)
    return Page(items=[_comment_out(c) for c in found], next_cursor=encode_cursor(position) if position else None)


@router.post("/{event_id}/comments", status_code=201, responses=problems(403, 404, 409))
async def post_comment(
    event_id: str, body: CommentBody, caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)
) -> CommentOut:
    return _comment_out(await service.post_comment(uow, event_id, UserId(caller.user_id), body.body))


@router.patch("/{event_id}/comments/{comment_id}", responses=problems(403, 404))
async def edit_comment(
    event_id: str, comment_id: str, body: CommentBody, caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)
) -> CommentOut:
    """Its author only."""
    return _comment_out(await service.edit_comment(uow, event_id, comment_id, UserId(caller.user_id), body.body))


@router.delete("/{event_id}/comments/{comment_id}", status_code=204, responses=problems(403, 404))
async def delete_comment(
    event_id: str, comment_id: str, caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)
) -> Response:
    """Its author, or a leader of the group."""
    await service.delete_comment(uow, event_id, comment_id, UserId(caller.user_id))
    return Response(status_code=204)


@router.post("/{event_id}/check-in/{user_id}", responses=problems(403, 404, 409))
async def check_in(
    event_id: str, user_id: str, caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)
) -> CheckInOut:
    """Leaders mark a going attendee present; again changes nothing."""
    done: CheckIn = await service.check_in_attendee(uow, event_id, UserId(caller.user_id), UserId(user_id))
    return CheckInOut(user_id=done.user_id, checked_in_at=done.checked_in_at, attendance=done.attendance)


# --- calendars ------------------------------------------------------------------------------------------------------


@router.get(
    "/{event_id}/ics",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}, **problems(404)},
)
async def event_calendar(
    event_id: str, caller: MaybeUser, context: ServiceContext = Depends(service_context)
) -> Response:
    """One event as an iCalendar file (the online URL only for people going)."""
    async with reading(context.db) as stores:
        view = await service.view_event(stores, event_id, UserId(caller.user_id) if caller else None)
    body = calendar_of(
        [(view.event, view.group.name, view.going)],
        public_url=context.settings.effective_public_url,
        now=context.clock.now(),
    )
    headers = {"Content-Disposition": f'attachment; filename="{event_id}.ics"'}
    return Response(body, media_type=CALENDAR, headers=headers)


def _feed_url(context: ServiceContext, token: str) -> str:
    return f"{context.settings.effective_public_url}/api/calendar/{token}.ics"


@calendar_router.get("/me")
async def my_calendar_feed(
    caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow), context: ServiceContext = Depends(service_context)
) -> FeedOut:
    """A secret feed URL of everything you are going to (issued on first request)."""
    return FeedOut(url=_feed_url(context, await service.calendar_feed_token(uow, UserId(caller.user_id))))


@calendar_router.delete("/me", status_code=204)
async def revoke_my_calendar_feed(caller: CurrentUser, uow: EventsUnitOfWork = Depends(_uow)) -> Response:
    """The feed URL stops working; asking again gives a new one."""
    await service.revoke_calendar_feed(uow, UserId(caller.user_id))
    return Response(status_code=204)


@calendar_router.get(
    "/{token}.ics",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}, **problems(404)},
)
async def calendar_feed(token: str, context: ServiceContext = Depends(service_context)) -> Response:
    """The feed itself: no login (calendar apps cannot send one); the token is the key."""
    now = context.clock.now()
    async with reading(context.db) as stores:
        going = await service.calendar_feed(stores, token, now)
    body = calendar_of(
        [(event, group_name, True) for event, group_name in going],
        public_url=context.settings.effective_public_url,
        now=now,
        name="Gatherly: my events",
    )
    return Response(body, media_type=CALENDAR)
