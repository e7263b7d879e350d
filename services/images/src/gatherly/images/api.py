"""HTTP routes of the images service: parse, call a use case, shape the response.

Domain errors get their HTTP status here, in STATUS_OF; the kernel writes them as problem+json (InvalidInput is the
kernel's own, 422). `/media` is the local storage's side of signed URLs (uploads by PUT, variant downloads); it is
not part of the API document, like an S3 endpoint is not, and answers 404 when storage is S3."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from gatherly.images import service
from gatherly.images.domain import (
    ImageNotFound,
    NotYourUpload,
    Purpose,
    TooManyOpenUploads,
    UploadNotCompletable,
    UserId,
    check_slot,
)
from gatherly.images.schemas import ImageOut, UploadOut, UploadRequest, UploadTargetOut
from gatherly.images.service import ImageView, storage_of, wake_processing, wake_tidying
from gatherly.images.storage import CACHE_FOREVER, PRIVATE, LocalStorage, UploadRefused, UrlRefused
from gatherly.images.store import ImagesUnitOfWork, reading, unit_of_work
from gatherly.kernel.auth import CurrentUser
from gatherly.kernel.errors import DomainError, NotFound
from gatherly.kernel.openapi import problems
from gatherly.kernel.runtime import ServiceContext, service_context
from gatherly.kernel.web import statuses_from

# Each domain error's HTTP status, in one place.
STATUS_OF: dict[type[DomainError], int] = {
    ImageNotFound: 404,
    NotYourUpload: 403,
    TooManyOpenUploads: 429,
    UploadNotCompletable: 409,
    UploadRefused: 400,
    UrlRefused: 403,
}

router = APIRouter(prefix="/api/images", tags=["images"], route_class=statuses_from(STATUS_OF))
media = APIRouter(prefix="/media", include_in_schema=False, route_class=statuses_from(STATUS_OF))


async def _uow(context: ServiceContext = Depends(service_context)) -> ImagesUnitOfWork:
    return unit_of_work(context)


def _image_out(view: ImageView) -> ImageOut:
    image = view.image
    return ImageOut(
        id=image.id,
        purpose=image.purpose,
        status=image.status.shown_as,
        reason=image.reason,
        variants=view.variant_urls,
        width=image.width,
        height=image.height,
        created_at=image.created_at,
    )


@router.post("/uploads", status_code=201, responses=problems(403, 429))
async def request_upload(
    body: UploadRequest,
    caller: CurrentUser,
    uow: ImagesUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> UploadOut:
    """An upload slot: send the file to `upload` (PUT, or POST form with `fields`) before `expires_at`, then
    call complete. Type and size are checked here and again by the storage when the file arrives."""
    if body.owner_id is not None and body.owner_id != caller.user_id:
        raise NotYourUpload("An image is uploaded by its owner: owner_id must be yours, or left out.")
    slot = check_slot(Purpose(body.purpose), body.content_type, body.size_bytes)
    new = await service.request_upload(
        uow,
        storage_of(context),
        UserId(caller.user_id),
        slot,
        ttl_seconds=context.settings.image_upload_ttl_seconds,
        open_limit=context.settings.image_open_uploads_per_person,
    )
    target = new.target
    return UploadOut(
        image_id=new.image.id,
        upload=UploadTargetOut(url=target.url, method=target.method, headers=target.headers, fields=target.fields),
        expires_at=new.image.upload_expires_at,
    )


@router.post("/{image_id}/complete", status_code=202, responses=problems(404, 409))
async def complete_upload(
    image_id: str,
    caller: CurrentUser,
    uow: ImagesUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> ImageOut:
    """The file is uploaded: it is checked and its variants made asynchronously; poll GET until ready or rejected."""
    image = await service.complete_upload(uow, image_id, UserId(caller.user_id))
    wake_processing(context)
    return _image_out(ImageView(image, None))


@router.get("/{image_id}", responses=problems(404))
async def get_image(image_id: str, caller: CurrentUser, context: ServiceContext = Depends(service_context)) -> ImageOut:
    """The owner's view of an image: pending, ready with variant URLs, or rejected with the reason."""
    async with reading(context.db) as stores:
        view = await service.view_image(
            stores,
            storage_of(context),
            image_id,
            UserId(caller.user_id),
            now=context.clock.now(),
            urls=service.UrlPolicy.of(context.settings),
        )
    return _image_out(view)


@router.delete("/{image_id}", status_code=204, responses=problems(404))
async def delete_image(
    image_id: str,
    caller: CurrentUser,
    uow: ImagesUnitOfWork = Depends(_uow),
    context: ServiceContext = Depends(service_context),
) -> Response:
    """The owner deletes an image: profiles and groups stop showing it, its files are deleted."""
    await service.delete_image(uow, image_id, UserId(caller.user_id))
    wake_tidying(context)
    return Response(status_code=204)


# --- the local storage's signed URLs --------------------------------------------------------------------------------


def _local(context: ServiceContext) -> LocalStorage:
    storage = storage_of(context)
    if not isinstance(storage, LocalStorage):
        raise NotFound("Media are served by the S3 storage, not here.")
    return storage


@media.put("/{key:path}")
async def upload_object(key: str, request: Request, context: ServiceContext = Depends(service_context)) -> Response:
    storage = _local(context)
    body = await request.body()  # at most the body limit of /media (the boundary refuses more while reading)
    await storage.accept_upload(key, dict(request.query_params), request.headers.get("content-type", ""), body)
    return Response(status_code=204)


@media.get("/{key:path}")
async def download_object(key: str, request: Request, context: ServiceContext = Depends(service_context)) -> Response:
    path = _local(context).download_path(key, dict(request.query_params))
    if path is None:
        raise NotFound("No such object.")
    if key.startswith("exports/"):  # a person's data export: downloaded as a file, kept by nobody on the way
        return FileResponse(path, media_type="application/zip", filename=path.name, headers={"Cache-Control": PRIVATE})
    return FileResponse(path, media_type="image/webp", headers={"Cache-Control": CACHE_FOREVER})
