"""HTTP routes of the images service: parse, call a use case, shape the response."""

from fastapi import APIRouter

router = APIRouter()
