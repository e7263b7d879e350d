"""Issue 15: an email invitation reaches an address with no account (the group's name, who invites, the link, in
the notifications' look), once; its one-click "never email me invitations again" link needs no login and is
honoured for that address from then on, account or not."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import func, select

from gatherly.app.testing import mail_to, sign_up
from gatherly.contracts.groups import GroupInvitationSent
from gatherly.kernel.addresses import address_hash
from gatherly.notifications import service
from gatherly.notifications.store import reading, unit_of_work
from gatherly.notifications.tables import deliveries, invitation_mails

from .conftest import eventually  # type: ignore[import-not-found]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _address() -> str:
    return f"guest-{uuid.uuid4().hex[:10]}@example.org"


async def _invite(api: Any, manager: Any, group_id: str, address: str) -> dict[str, Any]:
    response = await api.client.post(
        f"/api/groups/{group_id}/invitations", json={"email": address}, headers=manager.auth
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _mail_to(api: Any, address: str, count: int = 1) -> Any:
    async def arrived() -> bool:
        return len(mail_to(api.running.mail_dir, address)) >= count

    await eventually(arrived, what=f"mail #{count} to {address}")
    return mail_to(api.running.mail_dir, address)[-1]


def _text(mail: Any) -> str:
    text: str = mail.get_body(("plain",)).get_content()
    return text


def _html(mail: Any) -> str:
    html: str = mail.get_body(("html",)).get_content()
    return html


def _notifications(api: Any) -> Any:
    return api.running.process.host("notifications").context


async def _queued_for(api: Any, invitation_id: str) -> tuple[int, int]:
    """(invitation rows kept, sends made) for one invitation."""
    async with reading(_notifications(api).db) as stores:
        session = stores.invitations.session
        kept = await session.scalar(select(func.count()).where(invitation_mails.c.invitation_id == invitation_id))
        sends = await session.scalar(select(func.count()).where(deliveries.c.notification_id == invitation_id))
    return int(kept or 0), int(sends or 0)


async def test_an_address_with_no_account_is_mailed_the_invitation_and_its_owner_joins_after_signing_up(
    api: Any,
) -> None:
    olga = await api.person("Olga Organizer")
    group_id = await api.group(olga, name="Canal Walkers", join_policy="approval", questions=["Why?"])
    address = _address()
    invitation = await _invite(api, olga, group_id, address)

    mail = await _mail_to(api, address)
    assert mail["Subject"] == "Olga Organizer invites you to join Canal Walkers on Gatherly"
    assert mail["To"] == address
    public_url = api.running.process.settings.effective_public_url
    link = f"{public_url}/groups/{group_id}?invitation={invitation['token']}"
    assert link in _text(mail) and link in _html(mail)
    assert "Canal Walkers" in _html(mail) and "Olga Organizer" in _html(mail)
    assert "for this address only" in _text(mail)
    # The notifications' look: the same frame as every other notification email.
    assert '<p style="font-size: 1.25rem; font-weight: 700; color: #7c3aed">Gatherly</p>' in _html(mail)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/api/notifications/invitations/opt-out?" in mail["List-Unsubscribe"]
    assert address not in mail["List-Unsubscribe"]  # the link names a hash of the address, never the address
    # Sent and forgotten: the address and its live link are not kept.
    await eventually(lambda: _kept_none(api, invitation["id"]), what="the sent invitation forgotten")

    guest = await sign_up(api.running, email=address, display_name="Guest")
    await api.running.settle()
    token = parse_qs(urlparse(link).query)["invitation"][0]
    joined = await api.client.post(f"/api/groups/{group_id}/join", json={"invitation": token}, headers=guest.auth)
    assert joined.json() == {"status": "member"}


async def _kept_none(api: Any, invitation_id: str) -> bool:
    kept, sends = await _queued_for(api, invitation_id)
    return kept == 0 and sends == 1


async def test_the_same_invitation_handled_twice_is_mailed_once(api: Any) -> None:
    """A redelivery, or a replay of the consumer group, must not mail the address again."""
    olga = await api.person("Olga Organizer")
    now = datetime.now(UTC)
    event = GroupInvitationSent(
        group_id=str(uuid.uuid4()),
        invitation_id=str(uuid.uuid4()),
        slug="twice",
        group_name="Twice",
        invited_by=olga.user_id,
        email=_address(),
        token="t" * 43,
        expires_at=now + timedelta(days=7),
        sent_at=now,
    )
    context = _notifications(api)
    for _ in range(2):
        uow = unit_of_work(context)
        async with uow:
            await service.invited(uow, event, source=str(uuid.uuid4()))
    await _mail_to(api, event.email)
    await eventually(lambda: _kept_none(api, event.invitation_id), what="the invitation sent")
    assert len(mail_to(api.running.mail_dir, event.email)) == 1


async def test_an_invitation_that_lapsed_before_it_arrived_is_not_mailed(api: Any) -> None:
    olga = await api.person("Olga Organizer")
    now = datetime.now(UTC)
    event = GroupInvitationSent(
        group_id=str(uuid.uuid4()),
        invitation_id=str(uuid.uuid4()),
        slug="late",
        group_name="Late",
        invited_by=olga.user_id,
        email=_address(),
        token="t" * 43,
        expires_at=now - timedelta(seconds=1),
        sent_at=now - timedelta(days=7),
    )
    uow = unit_of_work(_notifications(api))
    async with uow:
        await service.invited(uow, event, source=str(uuid.uuid4()))
    assert await _queued_for(api, event.invitation_id) == (0, 0)


async def test_the_opt_out_link_needs_no_login_and_stops_invitations_to_that_address_for_good(api: Any) -> None:
    olga = await api.person("Olga Organizer")
    group_id = await api.group(olga, name="Opt Out Hikers")
    address = _address()
    await _invite(api, olga, group_id, address)
    opt_out = (await _mail_to(api, address))["List-Unsubscribe"].strip("<>")
    query = parse_qs(urlparse(opt_out).query)
    assert query["address"] == [address_hash(address)]
    path = urlparse(opt_out).path

    page = await api.client.get(path, params=query)  # a GET (a mail scanner) changes nothing
    assert page.status_code == 200 and 'method="post"' in page.text
    forged = {"address": address_hash(_address()), "sig": query["sig"]}  # another address, this signature
    assert (await api.client.post(path, params=forged)).status_code == 404
    for hostile in ({"address": "A" * 64, "sig": query["sig"]}, {"address": "\x00" * 64, "sig": query["sig"]}):
        refused = await api.client.post(path, params=hostile)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"

    second = await _invite(api, olga, group_id, address)
    await _mail_to(api, address, count=2)  # not opted out yet: mailed
    done = await api.client.post(path, params=query)  # no Authorization header
    assert done.status_code == 200 and "no more invitations" in done.text
    assert (await api.client.post(path, params=query)).status_code == 200  # twice changes nothing

    third = await _invite(api, olga, group_id, address.upper())
    await api.running.settle()
    assert await _queued_for(api, third["id"]) == (0, 0)
    assert await _queued_for(api, second["id"]) == (0, 1)
    assert len(mail_to(api.running.mail_dir, address)) == 2

    # Later with an account at that address: the invitation is in their inbox, and still not mailed.
    owner = await sign_up(api.running, email=address, display_name="Owner")
    await api.running.settle()
    fourth = await _invite(api, olga, group_id, address)
    await api.running.settle()
    [notice] = [i for i in (await api.inbox(owner))["items"] if i["kind"] == "group_invitation"]
    assert fourth["token"] in notice["link"]
    async with reading(_notifications(api).db) as stores:
        sends = await stores.invitations.session.scalar(
            select(func.count()).where(deliveries.c.user_id == owner.user_id, deliveries.c.channel == "email")
        )
    assert sends == 0
    assert not [m for m in mail_to(api.running.mail_dir, address) if "invite" in str(m["Subject"]).lower()][2:]


async def test_an_invitation_to_someone_with_an_account_stays_an_inbox_notice_and_an_email_per_preferences(
    api: Any,
) -> None:
    olga, bob = await api.person("Olga Organizer"), await api.person("Bob")
    group_id = await api.group(olga, name="Known People")
    invitation = await _invite(api, olga, group_id, bob.email)
    mail = await api.wait_for_mail(bob, "You are invited to join Known People")
    assert "/api/notifications/unsubscribe?" in mail["List-Unsubscribe"]
    assert await _queued_for(api, invitation["id"]) == (0, 0)  # not the address channel
    assert re.search(r"invitation=[\w-]+", _text(mail))
