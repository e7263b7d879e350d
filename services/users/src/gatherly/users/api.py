"""HTTP routes of the users service: parse, call a use case, shape the response. Domain errors get their HTTP
status here, in STATUS_OF; the kernel writes them as problem+json."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from gatherly.contracts.users import GeoPoint
from gatherly.kernel.auth import CurrentOrDeletedUser, CurrentUser
from gatherly.kernel.errors import DomainError
from gatherly.kernel.openapi import problems
from gatherly.kernel.runtime import ServiceContext, service_context
from gatherly.kernel.web import statuses_from
from gatherly.users import service
from gatherly.users.domain import (
    AccountGone,
    AccountLocked,
    AccountLockedByAdministrator,
    AccountNotConfirmed,
    BadCredentials,
    EmailTaken,
    InvalidLink,
    InvalidRefreshToken,
    NoAccountWithEmail,
    NoDeletion,
    NoExport,
    RateLimited,
    TooManyExports,
    UserNotFound,
    WrongPassword,
)
from gatherly.users.schemas import (
    AuthorizationServerMetadata,
    DeletionProgress,
    DeletionStarted,
    EmailChange,
    ExportProgress,
    ExportStarted,
    LoginRequest,
    Me,
    OpenIdConfiguration,
    PasswordChange,
    PasswordResetConfirmation,
    PasswordResetRequest,
    ProfileChanges,
    PublicProfile,
    RefreshRequest,
    SignUpRequest,
    TokenRequest,
    Tokens,
)
from gatherly.users.service import Identity, ProfileView, TokenPair
from gatherly.users.store import UsersUnitOfWork, unit_of_work

# Each domain error's HTTP status, in one place.
STATUS_OF: dict[type[DomainError], int] = {
    InvalidLink: 400,
    BadCredentials: 401,
    InvalidRefreshToken: 401,
    AccountGone: 401,
    AccountLockedByAdministrator: 401,
    AccountNotConfirmed: 403,
    WrongPassword: 403,
    NoAccountWithEmail: 404,  # from the administrators' lock command, not from a route
    NoDeletion: 404,
    NoExport: 404,
    UserNotFound: 404,
    EmailTaken: 409,
    AccountLocked: 429,
    RateLimited: 429,
    TooManyExports: 429,
}


router = APIRouter(route_class=statuses_from(STATUS_OF))

Context = Annotated[ServiceContext, Depends(service_context)]

NO_STORE = {"Cache-Control": "no-store"}  # token responses must not be cached (RFC 6749 §5.1)


# Dependencies are async: FastAPI runs plain `def` ones in a worker thread, a hop that costs more than they do.
async def identity_of(context: Context) -> Identity:
    identity: Identity = context.extras["identity"]
    return identity


async def uow_of(context: Context) -> UsersUnitOfWork:
    return unit_of_work(context)


IdentityDep = Annotated[Identity, Depends(identity_of)]
Uow = Annotated[UsersUnitOfWork, Depends(uow_of)]


async def client_address(request: Request, context: Context) -> str:
    """The caller's address: the peer's, or with `trusted_proxy_hops` proxies in front, the X-Forwarded-For
    entry the outermost trusted proxy saw (entries further left can be forged by the client)."""
    peer = request.client.host if request.client else "unknown"
    hops = context.settings.trusted_proxy_hops
    if hops <= 0:
        return peer
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    return forwarded[-hops] if len(forwarded) >= hops else (forwarded[0] if forwarded else peer)


Client = Annotated[str, Depends(client_address)]


def _tokens(pair: TokenPair) -> JSONResponse:
    body = Tokens(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)
    return JSONResponse(body.model_dump(), headers=NO_STORE)


def _public(view: ProfileView) -> dict[str, Any]:
    """The fields anyone may see: no email, and a city but never the exact point."""
    p = view.profile
    return {
        "id": p.user_id,
        "display_name": p.display_name,
        "bio": p.bio,
        "city": p.city,
        "topics": p.topics,
        "avatar": view.avatar,
        "created_at": p.created_at,
    }


def _me(view: ProfileView) -> Me:
    return Me(**_public(view), email=view.profile.email, location=view.profile.location)


# --- identity ---------------------------------------------------------------------------------------------------


@router.post("/api/auth/signup", status_code=202, tags=["auth"], responses=problems(429))
async def sign_up(body: SignUpRequest, uow: Uow, identity: IdentityDep, client: Client) -> dict[str, Any]:
    await service.sign_up(
        uow, identity, email=body.email, password=body.password, display_name=body.display_name, client=client
    )
    return {}


@router.post("/api/auth/confirm", tags=["auth"], responses=problems(400))
async def confirm_email(body: TokenRequest, uow: Uow) -> dict[str, Any]:
    await service.confirm_email(uow, body.token)
    return {}


@router.post("/api/auth/login", response_model=Tokens, tags=["auth"], responses=problems(401, 403, 429))
async def log_in(body: LoginRequest, uow: Uow, identity: IdentityDep, client: Client) -> JSONResponse:
    return _tokens(await service.log_in(uow, identity, email=body.email, password=body.password, client=client))


@router.post("/api/auth/refresh", response_model=Tokens, tags=["auth"], responses=problems(401))
async def refresh_tokens(body: RefreshRequest, uow: Uow, identity: IdentityDep) -> JSONResponse:
    return _tokens(await service.refresh(uow, identity, body.refresh_token))


@router.post("/api/auth/logout", status_code=204, tags=["auth"])
async def log_out(body: RefreshRequest, uow: Uow) -> Response:
    await service.log_out(uow, body.refresh_token)
    return Response(status_code=204)


@router.post("/api/auth/password-reset", status_code=202, tags=["auth"], responses=problems(429))
async def request_password_reset(
    body: PasswordResetRequest, uow: Uow, identity: IdentityDep, client: Client
) -> dict[str, Any]:
    await service.request_password_reset(uow, identity, email=body.email, client=client)
    return {}


@router.post("/api/auth/password-reset/confirm", status_code=204, tags=["auth"], responses=problems(400))
async def reset_password(body: PasswordResetConfirmation, uow: Uow, identity: IdentityDep) -> Response:
    await service.reset_password(uow, identity, token=body.token, password=body.password)
    return Response(status_code=204)


@router.post("/api/auth/confirm-email", tags=["auth"], responses=problems(400, 409))
async def confirm_email_change(body: TokenRequest, uow: Uow) -> dict[str, Any]:
    await service.confirm_email_change(uow, body.token)
    return {}


@router.get(
    "/.well-known/openid-configuration", response_model=OpenIdConfiguration, tags=["auth"], responses=problems(404)
)
async def get_openid_configuration(identity: IdentityDep) -> JSONResponse:
    # Long-lived facts (the keys themselves rotate behind jwks_uri): cacheable for an hour.
    document = service.openid_configuration(identity)
    return JSONResponse(document.model_dump(), headers={"Cache-Control": "public, max-age=3600"})


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=AuthorizationServerMetadata,
    tags=["auth"],
    responses=problems(404),
)
async def get_authorization_server_metadata(identity: IdentityDep) -> JSONResponse:
    document = service.authorization_server_metadata(identity)
    return JSONResponse(document.model_dump(), headers={"Cache-Control": "public, max-age=3600"})


@router.get("/.well-known/jwks.json", tags=["auth"])
async def get_signing_keys(context: Context) -> JSONResponse:
    # Short cache: verifiers also refetch on an unknown key id, so a rotation is seen at once anyway.
    keys = await service.published_keys(context.db)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})


# --- profiles ---------------------------------------------------------------------------------------------------


@router.get("/api/users/me", response_model=Me, tags=["users"], responses=problems(401))
async def get_me(me: CurrentUser, uow: Uow, identity: IdentityDep) -> Me:
    return _me(await service.my_profile(uow, identity, me))


@router.patch("/api/users/me", response_model=Me, tags=["users"], responses=problems(401))
async def update_me(body: ProfileChanges, me: CurrentUser, uow: Uow, identity: IdentityDep) -> Me:
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    if body.location is not None:
        changes["location"] = GeoPoint(lat=body.location.lat, lng=body.location.lng)
    return _me(await service.update_profile(uow, identity, me, changes))


@router.post("/api/users/me/password", status_code=204, tags=["users"], responses=problems(401, 403, 429))
async def change_password(body: PasswordChange, me: CurrentUser, uow: Uow, identity: IdentityDep) -> Response:
    await service.change_password(
        uow, identity, me, current_password=body.current_password, new_password=body.new_password
    )
    return Response(status_code=204)


@router.post("/api/users/me/email", status_code=202, tags=["users"], responses=problems(401, 403, 409, 429))
async def change_email(body: EmailChange, me: CurrentUser, uow: Uow, identity: IdentityDep) -> dict[str, Any]:
    await service.request_email_change(uow, identity, me, new_email=body.new_email, password=body.password)
    return {}


@router.delete(
    "/api/users/me", status_code=202, response_model=DeletionStarted, tags=["users"], responses=problems(404)
)
async def delete_me(me: CurrentOrDeletedUser, uow: Uow, context: Context) -> DeletionStarted:
    deadline = timedelta(seconds=context.settings.account_deletion_deadline_seconds)
    return DeletionStarted(deletion_id=(await service.delete_account(uow, me, deadline)).id)


@router.get("/api/users/me/deletion", response_model=DeletionProgress, tags=["users"], responses=problems(404))
async def get_my_deletion(me: CurrentOrDeletedUser, context: Context) -> DeletionProgress:
    deletion = await service.deletion_of(context.db, me)
    return DeletionProgress(status=deletion.status, reason=deletion.reason, answered=list(deletion.answered))


@router.post(
    "/api/users/me/export", status_code=202, response_model=ExportStarted, tags=["users"], responses=problems(401, 429)
)
async def export_me(me: CurrentUser, uow: Uow, context: Context) -> ExportStarted:
    """Ask for a copy of everything Gatherly holds of you: an email brings a link to one zip when it is ready.
    Asked again while an export is pending, the answer names that one. At most `GATHERLY_EXPORTS_PER_PERSON_PER_DAY`
    (3) in any 24 hours: one more is 429 with Retry-After."""
    settings = context.settings
    deadline = timedelta(seconds=settings.export_deadline_seconds)
    export = await service.request_export(uow, me, deadline=deadline, per_day=settings.exports_per_person_per_day)
    return ExportStarted(export_id=export.id)


@router.get("/api/users/me/exports/{export_id}", response_model=ExportProgress, tags=["users"], responses=problems(404))
async def get_my_export(export_id: str, me: CurrentUser, context: Context) -> ExportProgress:
    export = await service.export_of(context.db, me, export_id)
    link = export.link(context.clock.now())
    return ExportProgress(
        status=export.status, download_url=link, expires_at=export.expires_at if link else None, reason=export.reason
    )


@router.get("/api/users/{user_id}", response_model=PublicProfile, tags=["users"], responses=problems(404))
async def get_user(user_id: str, context: Context) -> PublicProfile:
    return PublicProfile(**_public(await service.public_profile(context.db, user_id)))
