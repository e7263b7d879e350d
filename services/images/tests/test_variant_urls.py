"""Variant URLs per purpose: with S3 and a public base URL, the purposes named in GATHERLY_S3_PUBLIC_PURPOSES get
public URLs (a CDN or a public-read bucket policy), the others presigned GETs; local storage always signs. Presigning
is computed by boto3 without calling S3, so no server is needed here (the conformance suite fetches both kinds)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pydantic
import pytest

from gatherly.images.domain import Image, ImageId, Purpose, Status, UserId, Variant, variant_key
from gatherly.images.service import UrlPolicy, variant_urls
from gatherly.images.storage import LocalStorage, S3Storage, s3_client
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.settings import ImagePurpose, Settings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CDN = "https://cdn.example.org"


def ready(purpose: Purpose) -> Image:
    image_id = ImageId("0b0f3c52-8a3e-4c52-9d8e-7c1d2f3a4b5c")
    return Image(
        id=image_id,
        owner_id=UserId("ann"),
        purpose=purpose,
        content_type="image/jpeg",
        size_bytes=1000,
        status=Status.READY,
        created_at=NOW,
        upload_expires_at=NOW + timedelta(minutes=30),
        variants={variant: variant_key(image_id, variant) for variant in Variant},
    )


def s3(**settings: typing.Any) -> tuple[S3Storage, Settings]:
    configured = Settings(
        storage_backend="s3",
        s3_endpoint_url="http://127.0.0.1:9",  # never called: presigning is local
        s3_access_key_id="key",
        s3_secret_access_key="secret",
        s3_public_url=CDN,
        **settings,
    )
    return S3Storage(s3_client(configured), "bucket", Resilience(), public_url=CDN), configured


def test_by_default_avatars_banners_and_covers_are_public_and_event_photos_presigned() -> None:
    storage, settings = s3()
    policy = UrlPolicy.of(settings)
    for purpose in (Purpose.AVATAR, Purpose.GROUP_BANNER, Purpose.EVENT_COVER):
        urls = variant_urls(ready(purpose), storage, now=NOW, urls=policy)
        assert urls is not None
        assert urls.thumb == f"{CDN}/images/0b0f3c52-8a3e-4c52-9d8e-7c1d2f3a4b5c/thumb.webp", purpose
    photo = variant_urls(ready(Purpose.EVENT_PHOTO), storage, now=NOW, urls=policy)
    assert photo is not None
    for url in (photo.thumb, photo.medium, photo.large):
        assert url.startswith("http://127.0.0.1:9/bucket/images/")
        assert "X-Amz-Signature" in parse_qs(urlsplit(url).query)


def test_the_public_purposes_are_configurable() -> None:
    storage, settings = s3(s3_public_purposes=["event_photo"])
    policy = UrlPolicy.of(settings)
    photo = variant_urls(ready(Purpose.EVENT_PHOTO), storage, now=NOW, urls=policy)
    avatar = variant_urls(ready(Purpose.AVATAR), storage, now=NOW, urls=policy)
    assert photo is not None and avatar is not None
    assert photo.large.startswith(CDN) and not avatar.large.startswith(CDN)
    nothing_public = UrlPolicy.of(s3(s3_public_purposes=[])[1])
    for purpose in Purpose:
        urls = variant_urls(ready(purpose), storage, now=NOW, urls=nothing_public)
        assert urls is not None and "X-Amz-Signature" in urls.thumb, purpose


def test_local_storage_signs_every_purpose(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media", "http://localhost:8000", b"k" * 32, lambda: NOW)
    policy = UrlPolicy.of(Settings())
    for purpose in Purpose:
        urls = variant_urls(ready(purpose), storage, now=NOW, urls=policy)
        assert urls is not None and "signature=" in urls.thumb


def test_the_setting_is_read_from_the_environment_and_refuses_unknown_purposes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATHERLY_S3_PUBLIC_PURPOSES", '["avatar", "event_photo"]')
    assert UrlPolicy.of(Settings()).public == {Purpose.AVATAR, Purpose.EVENT_PHOTO}
    monkeypatch.setenv("GATHERLY_S3_PUBLIC_PURPOSES", '["wallpaper"]')
    with pytest.raises(pydantic.ValidationError, match="s3_public_purposes"):
        Settings()


def test_the_settings_purposes_are_the_services_purposes() -> None:
    assert set(typing.get_args(ImagePurpose)) == {purpose.value for purpose in Purpose}


def test_a_local_download_url_is_the_url_urlencode_made(tmp_path: Path) -> None:
    """The query is written by hand (storage.py): it is what urlencode() wrote, and its signature checks out."""
    storage = LocalStorage(tmp_path / "media", "http://localhost:8000/", b"k" * 32, lambda: NOW)
    image = ready(Purpose.EVENT_PHOTO)
    for key in [*image.variants.values(), "exports/0b0f3c52-8a3e-4c52-9d8e-7c1d2f3a4b5c.zip"]:
        for expires_at in (NOW, NOW + timedelta(days=7, microseconds=999_999), datetime(1969, 12, 31, tzinfo=UTC)):
            expires = str(int(expires_at.timestamp()))
            query = urlencode({"expires": expires, "signature": storage._sign("GET", key, expires)})
            url = storage.download_url(key, expires_at=expires_at)
            assert url == f"http://localhost:8000/media/{quote(key)}?{query}"
            if expires_at > NOW:
                signed = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
                assert storage.download_path(key, signed) is None  # accepted: no such file, no refusal
    with pytest.raises(ValueError, match="not a storage key"):
        storage.download_url("uploads/../../etc/passwd", expires_at=NOW)
