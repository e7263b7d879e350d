"""Request and response shapes of the groups service's HTTP API (the OpenAPI schema is made from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gatherly.contracts.users import ImageVariants
from gatherly.groups.domain import DeletionStatus, JoinPolicy, Location, Role, Standing, Visibility, valid_location


class LocationBody(BaseModel):
    lat: float
    lng: float

    def location(self, field: str) -> Location:
        return valid_location(Location(self.lat, self.lng), field)


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
        }
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
    banner_image_id: str | None = Field(None, max_length=64)


NULLABLE_CHANGES = {"city", "location", "banner_image_id"}


class JoinBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"answers": ["Most weekends"]}]})

    answers: list[str] = []


class JoinOut(BaseModel):
    status: Standing


class RoleBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "co_organizer"}]})

    role: Role


class DecisionOut(BaseModel):
    user_id: str
    status: Literal["member", "denied"]


class AnnouncementBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"subject": "Saturday hike moved", "body": "We meet at 9:00 instead of 8:30."}]}
    )

    subject: str
    body: str


class AnnouncementOut(BaseModel):
    announcement_id: str


class DeletionOut(BaseModel):
    id: str
    status: Literal["deleted"]
    deletion: DeletionStatus = Field(description="The group-deletion saga: pending until the events are cancelled.")
