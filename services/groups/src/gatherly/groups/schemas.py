"""Request and response shapes of the groups service's HTTP API (the OpenAPI schema is made from these)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from typing_extensions import TypedDict

from gatherly.contracts.users import ImageVariants
from gatherly.groups.domain import (
    DEFAULT_INVITATION_DAYS,
    MAX_INVITATION_DAYS,
    MAX_INVITATION_USES,
    MAX_MESSAGE,
    DeletionStatus,
    JoinPolicy,
    Role,
    Standing,
    Visibility,
)
from gatherly.kernel.read_models import ImageVariantsJson
from gatherly.kernel.web import LocationBody, LocationJson, Page

T = TypeVar("T")


class CountedPage(Page[T], Generic[T]):
    total: int = Field(description="How many the whole list holds (all pages).")


class MyMembership(BaseModel):
    role: Role | None
    status: Standing


class GroupSummary(BaseModel):
    id: str
    slug: str
    name: str
    city: str | None
    location: LocationBody | None
    topics: list[str]
    member_count: int
    visibility: Visibility
    join_policy: JoinPolicy
    banner: ImageVariants | None
    distance_km: float | None = Field(None, description="Only in searches with `near`: how far the group is.")


class GroupsPage(Page[GroupSummary]):
    total: int | None = Field(
        None,
        description="With member=me: how many of the caller's groups the search finds (within the radius with near).",
    )


# A page of groups as JSON in one pass: plain dicts of GroupSummary's fields, dumped by orjson, give the bytes
# GroupsPage would (test_list_json.py pins it, by hypothesis over any text, floats and nulls), without building twenty
# models a page that FastAPI would then validate again. The route keeps `response_model=GroupsPage` for the OpenAPI
# document. The keys come out in the dicts' order, which api._summary writes in GroupSummary's. orjson rather than a
# TypeAdapter over these TypedDicts: the same bytes (both print the shortest float that reads back, escape the same
# characters, and write a StrEnum as its value) in a quarter of the time (~5 against ~17 us a page of 20), as it
# checks no field's type on the way.
class GroupSummaryJson(TypedDict):
    id: str
    slug: str
    name: str
    city: str | None
    location: LocationJson | None
    topics: list[str]
    member_count: int
    visibility: Visibility
    join_policy: JoinPolicy
    banner: ImageVariantsJson | None
    distance_km: float | None


def groups_page_json(items: Sequence[Mapping[str, Any]], next_cursor: str | None, total: int | None) -> bytes:
    """A page of groups as GroupsPage's JSON: `items` are GroupSummaryJson's (the store's `Listed`, api._summary)."""
    return orjson.dumps({"items": items, "next_cursor": next_cursor, "total": total})


class GroupOut(GroupSummary):
    description: str
    questions: list[str]
    banner_image_id: str | None
    created_at: datetime
    updated_at: datetime
    my_membership: MyMembership | None


class MemberOut(BaseModel):
    user_id: str
    display_name: str | None
    avatar: ImageVariants | None
    role: Role
    joined_at: datetime


class AnswerOut(BaseModel):
    question: str
    answer: str


class JoinRequestOut(BaseModel):
    user_id: str
    display_name: str | None
    avatar: ImageVariants | None
    answers: list[AnswerOut]
    requested_at: datetime


class NewGroup(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Lyon Hikers",
                    "description": "Day hikes around Lyon.",
                    "topics": ["hiking"],
                    "city": "Lyon",
                    "location": {"lat": 45.76, "lng": 4.84},
                    "visibility": "public",
                    "join_policy": "approval",
                    "questions": ["How often do you hike?"],
                }
            ]
        },
    )

    name: str
    description: str = ""
    topics: list[str] = []
    city: str | None = None
    location: LocationBody | None = None
    visibility: Visibility = Visibility.PUBLIC
    join_policy: JoinPolicy = JoinPolicy.OPEN
    questions: list[str] = []


class GroupChanges(BaseModel):
    """Any of these; a field left out stays as it is. city, location and banner_image_id may be null."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"description": "Day hikes and weekend trips around Lyon.", "join_policy": "open"}]
        },
    )

    name: str | None = None
    description: str | None = None
    topics: list[str] | None = None
    city: str | None = None
    location: LocationBody | None = None
    visibility: Visibility | None = None
    join_policy: JoinPolicy | None = None
    questions: list[str] | None = None
    banner_image_id: uuid.UUID | None = Field(None, description="An image of the images service (a UUID).")


NULLABLE_CHANGES = {"city", "location", "banner_image_id"}


class JoinBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"answers": ["Most weekends"]}]})

    answers: list[str] = []
    invitation: str | None = Field(
        None, min_length=1, max_length=100, description="An invitation's token: join without approval."
    )


class JoinOut(BaseModel):
    status: Standing


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "co_organizer"}]})

    role: Role


class DecisionBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"message": "Welcome! We meet on Saturdays."}]}
    )

    message: str | None = Field(None, description=f"A note to the applicant, up to {MAX_MESSAGE} characters.")


class DecisionOut(BaseModel):
    user_id: str
    status: Literal["member", "denied"]


class AnnouncementBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"subject": "Saturday hike moved", "body": "We meet at 9:00 instead of 8:30."}]
        },
    )

    subject: str
    body: str


class AnnouncementOut(BaseModel):
    announcement_id: str


class DeletionOut(BaseModel):
    id: str
    status: Literal["deleted"]
    deletion: DeletionStatus = Field(description="The group-deletion saga: pending until the events are cancelled.")


class MyRequestOut(BaseModel):
    group_id: str
    slug: str
    group_name: str
    answers: list[AnswerOut]
    requested_at: datetime


class BanOut(BaseModel):
    user_id: str
    display_name: str | None
    banned_by: str
    banned_by_name: str | None
    banned_at: datetime


class NewInvitation(BaseModel):
    """A link anyone holding it may use, or (with `email`) an invitation mailed to one person (one use)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"expires_in_days": 7, "max_uses": 20}, {"email": "sam@example.com"}]},
    )

    expires_in_days: StrictInt = Field(DEFAULT_INVITATION_DAYS, description=f"1 to {MAX_INVITATION_DAYS}.")
    max_uses: StrictInt | None = Field(
        None, description=f"1 to {MAX_INVITATION_USES}; none: no limit until it expires."
    )
    email: str | None = Field(None, max_length=320, description="Send it to this address (one use).")


class InvitationOut(BaseModel):
    id: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    email: str | None
    revoked: bool
    account_deleted: bool = Field(
        description="Sent to an account that has since been deleted: its address is erased (`email` is null) and "
        "the invitation admits nobody."
    )


class NewInvitationOut(InvitationOut):
    token: str = Field(description='Shown this once (only a hash is kept): join with {"invitation": token}.')
    link: str = Field(description="The group's page with the token, to share.")
