"""Web Push (RFC 8030) with VAPID (RFC 8292) through pywebpush: the service's key pair, and the channel adapter that
encrypts a notification for each of its person's subscriptions (RFC 8291) and posts it to their push services.
A subscription the push service reports gone (404, 410) is removed, and so is one whose host now resolves to an
address the server must not reach (kernel/egress.py: checked before each post, and again on the very address
connected to); any other failure is retried by sending.py, and only to the subscriptions that did not take it yet
(each one that did is recorded in `push_receipts`)."""

from __future__ import annotations

import base64
import json
from email.utils import parseaddr

import aiohttp
import structlog
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pywebpush import WebPushException, webpush_async

from gatherly.kernel.egress import NotPublic, check_public_endpoint, public_socket_factory
from gatherly.kernel.runtime import ServiceContext
from gatherly.notifications.store import Delivery, PushSubscription, Stores, reading

log = structlog.get_logger(__name__)

# Where the key pair is kept (ServiceContext.extras).
VAPID = "vapid"
# Where the resolver that push endpoints' hosts are checked with is kept (ServiceContext.extras; tests put their own).
HOST_RESOLVER = "host_resolver"
# How long a push service keeps a message for a device that is offline.
TTL_SECONDS = 24 * 3600
GONE = (404, 410)


def new_private_key() -> str:
    """A new VAPID private key (P-256), as PEM text."""
    vapid = Vapid()
    vapid.generate_keys()
    return vapid.private_pem().decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class VapidKeys:
    """The service's VAPID key pair; the public key is what browsers pass as `applicationServerKey`."""

    def __init__(self, private_pem: str) -> None:
        self.signer = Vapid.from_pem(private_pem.encode())
        point = self.signer.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(point)


class PushChannel:
    """Sends one notification to every browser its person subscribed."""

    def __init__(self, context: ServiceContext, keys: VapidKeys) -> None:
        self.context = context
        self.keys = keys
        address = parseaddr(context.settings.mail_from)[1] or "no-reply@gatherly.local"
        # RFC 8292's contact for the push service's operators.
        self.subject = f"mailto:{address}"

    async def deliver(self, delivery: Delivery) -> bool:
        """True when every subscription took it (or is gone, and removed); False when nobody is subscribed any
        more; raises when a push service failed, so the send is retried for the subscriptions still owed it."""
        async with reading(self.context.db) as stores:
            notification = await stores.inbox.get(delivery.notification_id)
            subscriptions = await stores.push.of(delivery.user_id)
            already = await stores.push.delivered_to(delivery.id)
        if notification is None or not subscriptions:
            return False
        payload = json.dumps(
            {
                "id": notification.id,
                "kind": notification.kind.value,
                "title": notification.title,
                "body": notification.body,
                "link": notification.link,
            }
        )
        failures: list[Exception] = []
        allow_loopback = self.context.settings.dev_endpoints  # a local push service in dev mode (and the tests)
        connector = aiohttp.TCPConnector(socket_factory=public_socket_factory(allow_loopback=allow_loopback))
        async with aiohttp.ClientSession(connector=connector) as session:
            for subscription in subscriptions:
                if subscription.id in already:
                    continue  # took it on an earlier attempt: a browser shows each notification once
                try:
                    await check_public_endpoint(
                        subscription.endpoint, self.context.extras[HOST_RESOLVER], allow_loopback=allow_loopback
                    )
                except NotPublic as refused:
                    # A push service never lives there: the name was pointed somewhere else after it was accepted.
                    log.warning(
                        "push endpoint not public; subscription removed",
                        subscription=subscription.id,
                        reason=str(refused),
                    )
                    async with self.context.db.writing() as writing:
                        await Stores(writing).push.remove_gone(subscription.id)
                    continue
                except OSError as error:  # the name does not resolve now: tried again with the send
                    failures.append(error)
                    continue
                if (failure := await self._post(session, delivery, subscription, payload)) is not None:
                    failures.append(failure)
        if failures:
            raise failures[0]
        return True

    async def _post(
        self, session: aiohttp.ClientSession, delivery: Delivery, subscription: PushSubscription, payload: str
    ) -> Exception | None:
        """Posts to one subscription; None when it took the push (recorded) or is gone (removed), else the failure."""
        try:
            await webpush_async(
                {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}},
                data=payload,
                vapid_private_key=self.keys.signer,
                vapid_claims={"sub": self.subject},
                ttl=TTL_SECONDS,
                timeout=10,
                aiohttp_session=session,
            )
        except WebPushException as error:
            status = getattr(error.response, "status", None) or getattr(error.response, "status_code", None)
            if status not in GONE:
                return error
            log.info("push subscription gone; removed", subscription=subscription.id, status=status)
            async with self.context.db.writing() as writing:
                await Stores(writing).push.remove_gone(subscription.id)
            return None
        except Exception as error:  # the push service unreachable, a timeout, a refused address: retried by the sender
            return error
        async with self.context.db.writing() as writing:
            await Stores(writing).push.record_delivered(delivery.id, subscription.id, self.context.clock.now())
        return None
