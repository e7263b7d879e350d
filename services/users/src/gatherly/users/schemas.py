"""Request and response shapes of the users service's HTTP API (the OpenAPI schema is made from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatherly.contracts.users import GeoPoint, ImageVariants
from gatherly.kernel.web import LocationBody
from gatherly.users.domain import DeletionStatus, ExportStatus

# Generous bounds on raw input: the domain gives the precise rule (and message); these only keep junk small.
EmailField = Annotated[str, Field(max_length=320)]
PasswordField = Annotated[str, Field(max_length=1024)]
TokenField = Annotated[str, Field(max_length=512)]


class SignUpRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "ann@example.org", "password": "correct horse battery staple", "display_name": "Ann"}
            ]
        },
    )

    email: EmailField
    password: PasswordField
    display_name: Annotated[str, Field(max_length=200)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"token": "the-token-from-the-emailed-link"}]}
    )

    token: TokenField


class LoginRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "ann@example.org", "password": "correct horse battery staple"}]},
    )

    email: EmailField
    password: PasswordField


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"refresh_token": "the-refresh-token-from-login"}]}
    )

    refresh_token: TokenField


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"email": "ann@example.org"}]})

    email: EmailField


class PasswordResetConfirmation(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"token": "the-token-from-the-emailed-link", "password": "a new long passphrase"}]
        },
    )

    token: TokenField
    password: PasswordField


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class PublicProfile(BaseModel):
    """What anyone sees of a person: a city, never their point (only its owner sees that, in Me)."""

    id: str
    display_name: str
    bio: str
    city: str | None
    topics: list[str]
    avatar: ImageVariants | None
    created_at: datetime


class Me(PublicProfile):
    email: str | None
    location: GeoPoint | None


class PasswordChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"current_password": "correct horse battery staple", "new_password": "a new long passphrase"}]
        },
    )

    current_password: PasswordField
    new_password: PasswordField


class EmailChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"new_email": "ann@example.com", "password": "correct horse battery staple"}]},
    )

    new_email: EmailField
    password: PasswordField


class OpenIdConfiguration(BaseModel):
    """OpenID Connect discovery (OpenID Connect Discovery 1.0 §3): what a verifier needs from the issuer alone."""

    issuer: str
    jwks_uri: str
    response_types_supported: list[str]
    subject_types_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    claims_supported: list[str]


class AuthorizationServerMetadata(BaseModel):
    """OAuth 2.0 Authorization Server Metadata (RFC 8414): the issuer and its keys, and, said outright, no OAuth
    grant: tokens come from Gatherly's own login API, so there is no authorization endpoint and no token endpoint
    in the OAuth sense (an omitted `grant_types_supported` would mean the authorization code and implicit grants)."""

    issuer: str
    jwks_uri: str
    grant_types_supported: list[str]
    response_types_supported: list[str]


class ProfileChanges(BaseModel):
    # A field that cannot be changed here (email, id) is refused, not silently dropped with a 200.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"display_name": "Ann B.", "city": "Lyon", "topics": ["hiking", "board games"]}]
        },
    )

    display_name: Annotated[str | None, Field(max_length=200)] = None
    bio: Annotated[str | None, Field(max_length=10_000)] = None
    city: Annotated[str | None, Field(max_length=200)] = None
    location: LocationBody | None = None
    topics: Annotated[list[Annotated[str, Field(max_length=200)]] | None, Field(max_length=100)] = None
    avatar_image_id: Annotated[str | None, Field(max_length=64)] = None


class DeletionStarted(BaseModel):
    deletion_id: str


class DeletionProgress(BaseModel):
    """Where one's account deletion stands. `answered`: the services that have erased what they held (groups,
    events, notifications, images, and users for the account itself), in the order they did."""

    status: DeletionStatus
    reason: str | None
    answered: list[str] = []


class ExportStarted(BaseModel):
    export_id: str


class ExportProgress(BaseModel):
    """`download_url` while the archive can be downloaded (until `expires_at`); `reason` when it failed."""

    status: ExportStatus
    download_url: str | None = None
    expires_at: datetime | None = None
    reason: str | None = None
