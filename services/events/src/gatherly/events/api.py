"""HTTP routes of the events service: parse, call a use case, shape the response."""

from fastapi import APIRouter

router = APIRouter()
