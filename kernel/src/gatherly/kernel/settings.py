"""Settings from GATHERLY_* environment variables: the one place where embedded and distributed modes differ."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The images service's purposes (gatherly.images.domain.Purpose; a test there keeps the two alike).
ImagePurpose = Literal["avatar", "group_banner", "event_cover", "event_photo"]
PUBLIC_IMAGE_PURPOSES: tuple[ImagePurpose, ...] = ("avatar", "group_banner", "event_cover")


class Mode(StrEnum):
    EMBEDDED = "embedded"
    DISTRIBUTED = "distributed"


class LogBackend(StrEnum):
    EMBEDDED = "embedded"
    KAFKA = "kafka"  # a Kafka cluster (gatherly.kernel.log.kafka), for distributed mode


class MailBackend(StrEnum):
    FILES = "files"
    SMTP = "smtp"


class StorageBackend(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class Settings(BaseSettings):
    """Everything configurable. Defaults give the one-process embedded mode."""

    model_config = SettingsConfigDict(env_prefix="GATHERLY_", env_nested_delimiter="__", extra="ignore")

    mode: Mode = Mode.EMBEDDED
    data_dir: Path = Path("./var")
    port: int = 8000
    host: str = "127.0.0.1"
    public_url: str = ""  # empty: http://localhost:<port>
    # Dev conveniences such as the /dev/mail page (every confirmation and reset link): unset, they are on only
    # while the bind address is loopback, so nobody else can reach them; set explicitly, they are on (warned about
    # loudly at start when the bind address is not loopback).
    dev: bool | None = None
    # Origins whose pages may call the API from a browser (CORS); the public URL is always one.
    cors_origins: list[str] = Field(default_factory=list)
    # The web app's map tiles ({z}/{x}/{y} URL template) and their credit line; empty: markers on a plain
    # background. The tiles' origin is added to the CSP's img-src.
    map_tiles_url: str = ""
    map_attribution: str = ""
    # Request body limits by path prefix; every other route takes 1 MiB (gatherly.kernel.limits).
    body_limits: dict[str, int] = Field(
        default_factory=lambda: {"/api/images": 20 * 1024 * 1024, "/media": 20 * 1024 * 1024}
    )

    # Database: empty → one SQLite file per service under data_dir. Otherwise a URL template in which
    # "{service}" is replaced by the service name, e.g. postgresql+asyncpg://u:p@host/gatherly_{service}.
    database_url: SecretStr = SecretStr("")  # secret: it may carry a password; never printed or logged
    # Apply migrations at start; on by default in embedded mode, `gatherly migrate` otherwise.
    migrate_on_start: bool | None = None

    log_backend: LogBackend = LogBackend.EMBEDDED
    topic_partitions: int = 4
    # Kafka (log_backend=kafka): the brokers to bootstrap from (comma separated host:port), the replication factor
    # of the topics Gatherly creates (3 on a production cluster), and how long a silent group member keeps its
    # partitions (the brokers' group.min/max.session.timeout.ms must allow it).
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_session_timeout: float = Field(default=10.0, gt=0)
    # Who publishes the outbox to the log: the service's own polling relay, or Debezium's outbox router reading
    # PostgreSQL's write-ahead log (then the service only deletes published rows).
    relay: Literal["polling", "debezium"] = "polling"
    relay_poll_interval: float = 0.5
    # How often an embedded-log consumer looks for records that other processes appended (this process's own appends
    # wake it at once). Unset: 0.5 s when one process hosts every service (`gatherly up`: only tools such as
    # `gatherly dlq replay` append from elsewhere), 0.05 s when services run in processes of their own.
    log_poll_interval: float | None = None

    # Inbox rows outlive the log's retention (7 days by default), so no message can come back unrecognised.
    inbox_retention_days: int = 8
    consumer_max_attempts: int = 5
    consumer_retry_initial_delay: float = 0.1
    consumer_retry_max_delay: float = 5.0
    # Readiness turns unready while a supervised task (consumer, relay, scheduler) has been down this long.
    supervision_unready_after: float = 30.0

    # Tokens. The users service signs; every service verifies against the JWKS.
    jwt_issuer: str = ""  # empty: public_url
    jwt_audience: str = "gatherly"
    # Empty: the users service's own /.well-known/jwks.json. Set for an outside OIDC provider.
    jwks_url: str = ""
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_days: int = 30
    # A refresh token presented again this soon after its rotation returns the same new pair (two tabs refreshing
    # at once); later, the reuse revokes its family. 0 turns the window off.
    refresh_grace_seconds: float = 10.0
    # How often each process reads the revoked subjects (deleted or locked accounts) its services' consumers wrote
    # (a commit by its own consumer is read at once): the longest a revoked token keeps working on another process.
    revocation_refresh_seconds: float = Field(2.0, gt=0, le=60)

    mail_backend: MailBackend = MailBackend.FILES
    mail_from: str = "Gatherly <no-reply@gatherly.local>"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    # SMTP connections a process keeps open and sends over at once (each carries many messages, one at a time).
    smtp_connections: int = Field(10, ge=1, le=100)

    # "file": flagd's engine in-process on flags_file; "flagd": a flagd server set up by the FLAGD_* variables.
    flags_provider: Literal["file", "flagd"] = "file"
    flags_file: Path | None = None  # empty: <data_dir>/flags.json (created with defaults)

    shutdown_drain_seconds: float = 0.0  # time to stay up "not ready" so a load balancer stops routing
    log_json: bool | None = None  # unset: JSON lines unless the log goes to a terminal
    log_level: str = "INFO"
    # One log line per request (uvicorn's access log). Off by default: a proxy in front usually logs requests, and
    # formatting and redacting a line cost about a tenth of a cheap read's CPU time (docs/request-path.md).
    access_log: bool = False
    # Allocations between young collections of the cyclic garbage collector (CPython's default: 700). A request or a
    # consumer's poll makes thousands of short-lived containers, so at 700 young collections ran several times per
    # request: 7,000 took 3-9% off reads' CPU and about a quarter off the Kafka batch consumer's
    # (docs/request-path.md, "Twenty-first pass"), for a young generation of at most a few MB.
    gc_young_threshold: int = Field(7000, ge=100, le=1_000_000)

    # Users service (identity). argon2id parameters: RFC 9106's second recommended option (64 MiB, t=3, p=4);
    # hashes record their parameters and are upgraded at the next login when these change.
    password_time_cost: int = 3
    password_memory_kib: int = 64 * 1024
    password_parallelism: int = 4
    # Per client address and minute (token buckets, per process); 0 turns a limit off.
    signup_limit_per_minute: int = 30
    login_limit_per_minute: int = 60
    password_reset_limit_per_minute: int = 30
    # How many proxies in front of the service append to X-Forwarded-For; 0 trusts no header (the client
    # address is the peer's). Behind one nginx or Ingress: 1.
    trusted_proxy_hops: int = 0
    # A rotated-in signing key is published at once but signs only after this delay, so every verifier
    # (which refetches the JWKS on an unknown key id at most every few seconds) can know it first.
    signing_key_activation_seconds: float = 30.0
    # Emails the users service sends are kept in its database until delivered: retried with backoff.
    mail_retry_initial_delay: float = 5.0
    mail_retry_max_delay: float = 15 * 60.0
    mail_poll_interval: float = 2.0
    # How long an account deletion waits for every service's reply (groups, events, notifications, images) and its
    # own erasure before it is reported failed, naming who did not answer (checked about once a minute).
    account_deletion_deadline_seconds: float = Field(3600.0, gt=0)

    # Images service: where uploads and variants live. `local`: files in <data_dir>/media behind HMAC-signed URLs
    # that the service serves under /media; `s3`: a bucket of any S3 API with presigned URLs.
    storage_backend: StorageBackend = StorageBackend.LOCAL
    storage_signing_key: SecretStr = SecretStr("")  # local URLs' HMAC key; empty: a random one in the data dir
    s3_endpoint_url: str = ""  # empty: AWS; e.g. http://127.0.0.1:8333 for SeaweedFS or MinIO
    s3_region: str = "us-east-1"
    s3_bucket: str = "gatherly-images"
    s3_access_key_id: str = ""  # empty: boto3's own chain (environment, instance role)
    s3_secret_access_key: SecretStr = SecretStr("")
    # Where variants are public (a CDN or a bucket policy), e.g. https://cdn.example.org; empty: presigned GETs.
    s3_public_url: str = ""
    # The purposes whose variants get public URLs when s3_public_url is set; the others stay presigned GETs. Shown
    # to anyone by default: avatars, banners, covers. Event photos may come from members-only groups.
    s3_public_purposes: list[ImagePurpose] = Field(default_factory=lambda: list(PUBLIC_IMAGE_PURPOSES))
    image_upload_ttl_seconds: int = 30 * 60  # an upload slot's life: upload and complete within it
    image_url_ttl_seconds: int = 7 * 24 * 3600  # signed variant URLs (SigV4 allows at most 7 days)
    image_open_uploads_per_person: int = 20  # unfinished uploads one person may hold (each reserves space); 0: any
    # Groups service. Email invitations reach any address, so each inviter (all groups together) and each group may
    # send only this many in any 24 hours; one more is refused with 429 and Retry-After.
    invitation_emails_per_inviter_per_day: int = Field(20, ge=1)
    invitation_emails_per_group_per_day: int = Field(100, ge=1)
    # Data export ("download my data"): a saga not finished this long after the request is failed, naming the
    # services that did not answer; a finished archive can be downloaded this long (S3 presigns at most 7 days),
    # then it is deleted.
    export_deadline_seconds: int = 3600
    export_link_ttl_seconds: int = 2 * 24 * 3600
    # Each export builds a zip of all the person's pictures, kept for the link's life: a person may start this many
    # in any 24 hours (asked again while one is being made, they get that one); one more is refused with 429.
    exports_per_person_per_day: int = Field(3, ge=1)
    # Notifications service. A send (one notification on one channel) is tried this many times, the wait doubling
    # from the initial delay up to the longest; then it is recorded as failed for `gatherly notifications retry`.
    notification_send_attempts: int = 6
    notification_retry_initial_delay: float = 5.0
    notification_retry_max_delay: float = 10 * 60.0
    # How often the sender looks for due sends queued by other processes (its own process's commits wake it).
    notification_poll_interval: float = 1.0
    # A send being made is leased to its worker this long; a worker that dies mid-send is taken over after it.
    notification_send_lease_seconds: float = 60.0
    # Live streams send a comment line this often, so proxies keep the connection and clients notice a dead one.
    notification_heartbeat_seconds: float = 15.0
    # Live streams one person may hold open at once on one process (tabs, devices); one more gets 429.
    notification_streams_per_person: int = Field(5, ge=1)
    # A push receipt (this browser took that push) is kept this long after its send finished; while the send may be
    # retried (pending, or failed and retried by an operator) it is kept whatever its age.
    notification_push_receipt_retention_days: float = Field(7.0, gt=0)

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")

    @property
    def effective_issuer(self) -> str:
        return self.jwt_issuer or self.effective_public_url

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.mode is Mode.EMBEDDED

    def database_url_for(self, service: str) -> str:
        if template := self.database_url.get_secret_value():
            return template.replace("{service}", service)
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @property
    def is_loopback(self) -> bool:
        """Bound to this machine only, so nothing on the network can reach the port."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def dev_endpoints(self) -> bool:
        return self.dev if self.dev is not None else self.is_loopback

    @property
    def allowed_origins(self) -> list[str]:
        return [self.effective_public_url, *self.cors_origins]

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log.db"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def flags_path(self) -> Path:
        return self.flags_file or self.data_dir / "flags.json"
