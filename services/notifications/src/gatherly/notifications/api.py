"""HTTP routes of the notifications service: parse, call a use case, shape the response.

Refusals are the kernel's errors, raised by the use cases with their status (404 for a notification that is not
the caller's, 422 naming the field, 401 without a token or ticket); the kernel's handlers write problem+json."""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from gatherly.kernel.auth import CurrentUser, MaybeUser
from gatherly.kernel.errors import InvalidInput, Unauthorized
from gatherly.kernel.openapi import problems
from gatherly.kernel.routes import FastRoute
from gatherly.kernel.runtime import ServiceContext, service_context
from gatherly.kernel.web import FilteredCursors, PageRequest, encode_cursor, page_request
from gatherly.notifications import service
from gatherly.notifications.domain import (
    InvalidPreferences,
    Preferences,
    UserId,
    check_stream_allowed,
    preferences_from,
)
from gatherly.notifications.push import HOST_RESOLVER, VAPID, VapidKeys
from gatherly.notifications.schemas import (
    InboxJson,
    InboxOut,
    NotificationJson,
    PreferencesBody,
    PreferencesJson,
    PreferencesOut,
    PushSubscriptionBody,
    PushSubscriptionOut,
    TicketOut,
    VapidKeyOut,
    inbox_json,
    notification_json,
    preferences_json,
)
from gatherly.notifications.store import Notification, NotificationsUnitOfWork, reading, unit_of_work
from gatherly.notifications.stream import LIVE_FEED, LiveFeed

router = APIRouter(prefix="/api/notifications", tags=["notifications"], route_class=FastRoute)
push_router = APIRouter(prefix="/api/push", tags=["notifications"], route_class=FastRoute)

UNSUBSCRIBE_KEY = "unsubscribe_key"
STREAM_BATCH = 100


async def _uow(context: ServiceContext = Depends(service_context)) -> NotificationsUnitOfWork:
    return unit_of_work(context)


def _item(notification: Notification) -> NotificationJson:
    """A notification as the inbox's page and the live stream write it: NotificationOut's fields in its order."""
    return {
        "id": notification.id,
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "link": notification.link,
        "created_at": notification.created_at,
        "read_at": notification.read_at,
    }


def _preferences(chosen: Preferences) -> PreferencesJson:
    """The preferences as `preferences_json` writes them: PreferencesOut's fields in its order, every kind."""
    return {
        "email": chosen.email_table(),
        "push": chosen.push_table(),
        "reminders": {"hours_before": list(chosen.reminder_hours)},
    }


def _preferences_response(chosen: Preferences) -> Response:
    """What GET and PUT /preferences answer: the preferences now in force."""
    return Response(preferences_json(_preferences(chosen)), media_type="application/json")


# --- the inbox -----------------------------------------------------------------------------------------------------


@router.get("", response_model=InboxOut)
async def list_notifications(
    me: CurrentUser,
    unread: bool = Query(False, description="Only notifications not read yet."),
    page: PageRequest = Depends(page_request),
    context: ServiceContext = Depends(service_context),
) -> Response:
    """Newest first, with the caller's unread count."""
    # A cursor is tied to `unread` as a search's to its filters (one from the unread list would go on in the whole).
    cursors = FilteredCursors(lambda: [unread])
    before = None
    if (position := cursors.after(page.cursor)) is not None:
        before = position.get("before")
        # An inbox position: a positive 64-bit integer (a larger one would overflow the database's integer).
        if not isinstance(before, int) or isinstance(before, bool) or not 0 < before < 2**63:
            raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    found = await service.inbox(context.db, me, unread_only=unread, limit=page.limit, before=before)
    next_position = cursors.next(None if found.next_before is None else {"before": found.next_before})
    listed: InboxJson = {
        "items": [_item(n) for n in found.items],
        "next_cursor": encode_cursor(next_position) if next_position is not None else None,
        "unread_count": found.unread_count,
    }
    return Response(inbox_json(listed), media_type="application/json")


@router.post("/read-all", status_code=204)
async def read_all_notifications(me: CurrentUser, uow: NotificationsUnitOfWork = Depends(_uow)) -> Response:
    await service.mark_all_read(uow, me)
    return Response(status_code=204)


@router.post("/{notification_id}/read", status_code=204, responses=problems(404))
async def read_notification(
    notification_id: str,
    me: CurrentUser,
    uow: NotificationsUnitOfWork = Depends(_uow),
) -> Response:
    """Marks one of the caller's notifications read (again is fine); anyone else's is 404."""
    await service.mark_read(uow, me, notification_id)
    return Response(status_code=204)


# --- preferences ---------------------------------------------------------------------------------------------------


@router.get("/preferences", response_model=PreferencesOut)
async def get_preferences(me: CurrentUser, context: ServiceContext = Depends(service_context)) -> Response:
    return _preferences_response(await service.preferences_of(context.db, me))


@router.put("/preferences", response_model=PreferencesOut)
async def put_preferences(
    body: PreferencesBody, me: CurrentUser, uow: NotificationsUnitOfWork = Depends(_uow)
) -> Response:
    """Replaces the caller's choices: kinds left out go back to their default."""
    try:
        chosen = preferences_from(body.email, body.push, body.reminders.hours_before)
    except InvalidPreferences as invalid:
        raise InvalidInput(invalid.detail, errors=invalid.faults) from None
    return _preferences_response(await service.set_preferences(uow, me, chosen))


# --- one-click unsubscribe (RFC 8058) ----------------------------------------------------------------------------


def _page(title: str, text: str, form_action: str | None = None) -> HTMLResponse:
    button = ""
    if form_action is not None:
        button = (
            f'<form method="post" action="{html.escape(form_action)}">'
            '<button type="submit">Stop these emails</button></form>'
        )
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{button}</body></html>"
    )


UnsubscribeUser = Annotated[str, Query(alias="user", max_length=255)]
UnsubscribeKind = Annotated[str, Query(max_length=40)]
UnsubscribeSig = Annotated[str, Query(alias="sig", max_length=64)]


@router.get("/unsubscribe", response_class=HTMLResponse, responses=problems(404))
async def unsubscribe_page(user_id: UnsubscribeUser, kind: UnsubscribeKind, signature: UnsubscribeSig) -> HTMLResponse:
    """The link in every email: a page with one button (a GET never unsubscribes: mail scanners follow links)."""
    query = f"user={user_id}&kind={kind}&sig={signature}"
    return _page(
        "Unsubscribe",
        f"Stop emails about {kind.replace('_', ' ')}? You keep them in your Gatherly inbox.",
        form_action=f"/api/notifications/unsubscribe?{query}",
    )


@router.post("/unsubscribe", response_class=HTMLResponse, responses=problems(404))
async def unsubscribe_from_email(
    user_id: UnsubscribeUser,
    kind: UnsubscribeKind,
    signature: UnsubscribeSig,
    uow: NotificationsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> HTMLResponse:
    """One click, no login (RFC 8058's `List-Unsubscribe=One-Click` POST, or the page's button): that kind's
    emails stop for the person the signed link names."""
    chosen = await service.unsubscribe(uow, context.extras[UNSUBSCRIBE_KEY], user_id, kind, signature)
    return _page("Unsubscribed", f"You will get no more emails about {chosen.value.replace('_', ' ')}.")


# --- never email me invitations again -------------------------------------------------------------------------

OptOutAddress = Annotated[str, Query(alias="address", min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")]


@router.get("/invitations/opt-out", response_class=HTMLResponse)
async def invitations_opt_out_page(email_hash: OptOutAddress, signature: UnsubscribeSig) -> HTMLResponse:
    """The link in every invitation to an address with no account: a page with one button (a GET changes nothing:
    mail scanners follow links)."""
    return _page(
        "No more invitations",
        "Never email invitations to this address again?",
        form_action=f"/api/notifications/invitations/opt-out?address={email_hash}&sig={signature}",
    )


@router.post("/invitations/opt-out", response_class=HTMLResponse, responses=problems(404))
async def opt_out_of_invitations(
    email_hash: OptOutAddress,
    signature: UnsubscribeSig,
    uow: NotificationsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> HTMLResponse:
    """One click, no login (RFC 8058's One-Click POST, or the page's button): the address the signed link names
    (by the hash of it) is never emailed an invitation again."""
    await service.opt_out_of_invitations(uow, context.extras[UNSUBSCRIBE_KEY], email_hash, signature)
    return _page("No more invitations", "This address will get no more invitations from Gatherly.")


# --- the live stream ---------------------------------------------------------------------------------------------


@router.post("/stream-ticket", response_model=TicketOut)
async def issue_stream_ticket(me: CurrentUser, uow: NotificationsUnitOfWork = Depends(_uow)) -> TicketOut:
    """For browsers' EventSource, which cannot send an Authorization header: never an access token in a URL."""
    return TicketOut(ticket=await service.issue_stream_ticket(uow, me))


def _sse(notification: Notification) -> str:
    data = notification_json(_item(notification)).decode()
    return f"id: {notification.seq}\nevent: notification\ndata: {data}\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        **problems(401, 422, 429),
    },
)
async def stream_notifications(
    request: Request,
    me: MaybeUser,
    ticket: Annotated[str | None, Query(max_length=100, description="From POST /stream-ticket")] = None,
    uow: NotificationsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> StreamingResponse:
    """New notifications as they come (`event: notification`, `id:` their place in the inbox), a comment line as
    heartbeat. A `Last-Event-ID` header (EventSource sends it when it reconnects) sends what came after that id
    first; a bad one is 422. A `ticket`, when given, is what authenticates (a spent or unknown one is 401). A person
    may hold `GATHERLY_NOTIFICATION_STREAMS_PER_PERSON` streams at once on a process; one more is 429 with
    Retry-After, and does not spend its ticket."""
    feed: LiveFeed = context.extras[LIVE_FEED]
    limit = context.settings.notification_streams_per_person
    user_id: UserId | None = None
    if ticket is not None:
        user_id = await service.redeem_stream_ticket(
            uow, ticket, may_open=lambda person: check_stream_allowed(feed.streams_of(person), limit)
        )
    elif me is not None:
        user_id = UserId(me.user_id)
    if user_id is None:
        raise Unauthorized("A bearer token or a valid stream ticket is needed.")
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        if not (last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 18):
            raise InvalidInput("Last-Event-ID is an id this stream sent.", field="Last-Event-ID")
        since = int(last_event_id)
    else:
        async with reading(context.db) as stores:
            since = await stores.inbox.newest_seq(user_id)
    heartbeat = context.settings.notification_heartbeat_seconds
    # Taken last, with nothing awaited before the response owns it: two requests cannot both take the last one.
    woken = feed.open(user_id, limit=limit)
    return _EventStream(
        _events(context, woken, user_id, since, heartbeat),
        release=lambda: feed.close(user_id, woken),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _EventStream(StreamingResponse):
    """A stream that gives its place in the live feed back however it ends: finished, the client gone, or cancelled
    before its first line (a generator that never started runs no `finally`)."""

    def __init__(self, content: AsyncIterator[str], *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


async def _events(
    context: ServiceContext, woken: asyncio.Event, user_id: UserId, since: int, heartbeat: float
) -> AsyncIterator[str]:
    last = since
    yield f"retry: 3000\n: since {json.dumps(last)}\n\n"
    # A stopping service ends its streams (clients reconnect elsewhere with Last-Event-ID).
    while context.readiness.ready:
        woken.clear()  # before reading: a notification announced while we read wakes the next wait at once
        async with reading(context.db) as stores:
            new = await stores.inbox.after(user_id, last, STREAM_BATCH)
        for notification in new:
            yield _sse(notification)
            last = notification.seq
        if len(new) == STREAM_BATCH:
            continue
        try:
            await asyncio.wait_for(woken.wait(), heartbeat)
        except TimeoutError:
            yield ": heartbeat\n\n"


# --- web push --------------------------------------------------------------------------------------------------------


@push_router.get("/vapid-public-key", response_model=VapidKeyOut)
async def get_vapid_public_key(context: ServiceContext = Depends(service_context)) -> VapidKeyOut:
    """Made at the service's first start and kept: subscriptions stay valid across restarts."""
    keys: VapidKeys = context.extras[VAPID]
    return VapidKeyOut(public_key=keys.public_key)


@push_router.post("/subscriptions", status_code=201, response_model=PushSubscriptionOut)
async def subscribe_to_push(
    body: PushSubscriptionBody,
    me: CurrentUser,
    uow: NotificationsUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> PushSubscriptionOut:
    """This browser gets the caller's notifications as pushes (per their `push` preferences)."""
    key = await service.subscribe_to_push(
        uow,
        me,
        body.endpoint,
        body.keys.p256dh,
        body.keys.auth,
        dev=context.settings.dev_endpoints,
        resolve=context.extras[HOST_RESOLVER],
    )
    return PushSubscriptionOut(id=key)


@push_router.delete("/subscriptions/{subscription_id}", status_code=204, responses=problems(404))
async def unsubscribe_from_push(
    subscription_id: str, me: CurrentUser, uow: NotificationsUnitOfWork = Depends(_uow)
) -> Response:
    """Someone else's subscription is 404."""
    await service.unsubscribe_from_push(uow, me, subscription_id)
    return Response(status_code=204)
