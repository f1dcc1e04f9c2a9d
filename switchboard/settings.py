"""Settings for every service: defaults, ``config/switchboard.yaml`` (or ``--config FILE``), then env.

Environment variables win over the file; they use the prefix ``SWITCHBOARD_`` and ``__`` between
nested names (``SWITCHBOARD_MQTT__PORT=1884``). Settings are built once in ``main()`` by
:func:`load_settings` and passed down; nothing here runs at import time.

Every problem (unknown key, bad value) becomes a :class:`ConfigError` whose message is one line
naming the setting, its value, where it came from and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from switchboard.database_url import masked as masked_database_url
from switchboard.database_url import parse as parse_database_url
from switchboard.errors import ConfigError

ENV_PREFIX = "SWITCHBOARD_"
CONFIG_ENV = "SWITCHBOARD_CONFIG"
DEFAULT_CONFIG_FILE = Path("config/switchboard.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AclRuleSettings(_Section):
    """One operator rule for topics outside the chat scheme."""

    permission: Literal["allow", "deny"] = Field(description="allow or deny")
    action: Literal["publish", "subscribe", "all"] = Field(description="publish, subscribe or all")
    topic: str = Field(min_length=1, description="MQTT filter; %u is the username, %c the client id")

    @field_validator("topic")
    @classmethod
    def _filter_syntax(cls, topic: str) -> str:
        levels = topic.split("/")
        for index, level in enumerate(levels):
            if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
                raise ValueError(f"{topic!r} is not a valid MQTT topic filter")
        return topic


class MqttSettings(_Section):
    """The MQTT broker's listener and access policy."""

    host: str = Field("0.0.0.0", description="Address the broker listens on.")
    port: int = Field(1883, ge=0, le=65535, description="TCP port for MQTT (0 picks a free port).")
    allow_anonymous: bool = Field(
        False, description="Let clients connect without a username (generic MQTT use, no chat topics)."
    )
    ws_port: int | None = Field(
        8083, ge=0, le=65535, description="Port for MQTT over WebSocket (browsers); null turns it off."
    )
    tls_port: int | None = Field(
        None, ge=0, le=65535, description="Port for MQTT over TLS; needs tls_cert and tls_key. Null: off."
    )
    wss_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port for MQTT over WebSocket over TLS (browsers on https pages); needs tls_cert and tls_key. "
        "Null: off.",
    )
    tls_cert: str | None = Field(None, description="PEM certificate chain for the TLS and WSS listeners.")
    tls_key: str | None = Field(None, description="PEM private key for the TLS and WSS listeners.")
    max_connections: int = Field(50_000, ge=1, description="Most client connections at once; more are refused.")
    max_inflight: int = Field(
        20, ge=1, le=65535, description="Most unacknowledged QoS 1/2 messages per client; the rest wait in order."
    )
    service_max_inflight: int = Field(
        4000, ge=1, le=65535, description="In-flight window of service accounts (the bridge stores in batches)."
    )
    service_max_queued_messages: int = Field(
        1_000_000,
        ge=1,
        description="Queue bound of service accounts: the bridge is the system of record, so it may fall far "
        "behind (e.g. during a database outage) before anything is dropped.",
    )
    max_queued_messages: int = Field(
        10_000, ge=1, description="Most messages queued per session; when full the oldest is dropped (logged)."
    )
    max_packet_bytes: int = Field(
        256 * 1024, ge=1024, le=268_435_455, description="Largest packet a client may send, in bytes."
    )
    acl_rules: list[AclRuleSettings] | None = Field(
        None,
        description="Operator rules for topics outside the chat scheme, first match decides, no match denies; "
        "unset: with allow_anonymous every non-chat topic is open, without it none is.",
    )
    sys_interval: int = Field(10, ge=1, le=3600, description="Seconds between $SYS statistics updates.")
    directory_cache_seconds: float = Field(
        30,
        ge=0,
        le=3600,
        description="How long the broker trusts what it read about a user or a membership. Changes made "
        "through Switchboard reach it sooner (see directory_poll_seconds); this bounds changes made behind "
        "its back, straight in the database.",
    )
    metrics_host: str = Field("0.0.0.0", description="Address of the broker's Prometheus /metrics.")
    metrics_port: int | None = Field(
        9102, ge=0, le=65535, description="Port of the broker's /metrics (0 picks a free port); null turns it off."
    )
    credentials_cache_seconds: float = Field(
        300,
        ge=0,
        le=86400,
        description="How long the broker remembers credentials it has verified (as an HMAC), so reconnecting "
        "clients skip the argon2 hash and the database; 0: never. Disabling a user or resetting its password "
        "ends it at once (a remembered login first waits for the broker to read the directory events).",
    )
    directory_poll_seconds: float = Field(
        0.5,
        ge=0.05,
        le=60,
        description="How often the broker looks for user and membership changes (a removed group member stops "
        "receiving, a disabled user is disconnected, within this time).",
    )
    state_file: str | None = Field(
        "./var/broker-state.db",
        description="SQLite file keeping persistent sessions, queued and retained messages across restarts; "
        "null keeps them in memory only.",
    )
    max_subscriptions: int = Field(
        1000, ge=1, description="Most subscriptions per client; further filters get SUBACK 0x80."
    )
    publish_rate: float = Field(
        20,
        gt=0,
        description="Chat messages (dm/ and group/ publishes) a user may send per second, on average, over all its "
        "connections; beyond it (and the burst) a message is refused with a notice on ack/{user} (MQTT 5: reason "
        "code 0x96). Service accounts are exempt.",
    )
    publish_burst: int = Field(
        100, ge=1, description="Chat messages a user may send at once before publish_rate applies (a token bucket)."
    )
    max_session_expiry_seconds: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=0xFFFFFFFF,
        description="MQTT 5: longest session expiry interval granted; a client asking for more (or for "
        "'never', 0xFFFFFFFF) gets this, announced in CONNACK. Its offline queue is kept that long.",
    )
    max_keep_alive_seconds: int = Field(
        65_535,
        ge=0,
        le=65_535,
        description="MQTT 5: longest keep-alive allowed; a client asking for more, or for none (0), gets this as "
        "Server Keep Alive in CONNACK and is disconnected after 1.5 times it without a packet (Mosquitto's "
        "max_keepalive). 0 lets clients choose. MQTT 3.1.1 clients keep their own (3.1.1 cannot tell them).",
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> MqttSettings:
        for port in ("tls_port", "wss_port"):
            if getattr(self, port) is not None and not (self.tls_cert and self.tls_key):
                raise ValueError(f"mqtt.{port} needs mqtt.tls_cert and mqtt.tls_key (PEM files)")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"mqtt.{name} = {path!r}: no such file")
        return self


class ChatSettings(_Section):
    """Rules of the chat itself, enforced by the broker (dm_policy; the API's broker hooks too, for an external
    broker) and the bridge (edits) as messages arrive."""

    dm_policy: Literal["anyone", "shared_group"] = Field(
        "anyone",
        description="Who may send a user a direct message: anyone, or shared_group (only users who share a group "
        "with it, or already have a DM conversation with messages). Others are refused with a notice on ack/{user}.",
    )
    edit_window_seconds: int = Field(
        24 * 3600,
        ge=0,
        le=10 * 365 * 24 * 3600,
        description="How long after it was stored a message may still be edited by its sender (an edit relation); "
        "later edits are refused with a notice on ack/{user}. 0: no edits.",
    )


class ApiSettings(_Section):
    """The REST API's listener."""

    host: str = Field("0.0.0.0", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port for HTTP (0 picks a free port).")
    token_ttl_hours: int = Field(720, ge=1, le=24 * 365, description="How long a token from /v1/auth/token lives.")
    trusted_proxies: list[str] = Field(
        [],
        description="Addresses of reverse proxies whose X-Forwarded-For names the client (for the login "
        "throttle); empty: the header is ignored and the client is the connection's peer.",
    )
    cors_origins: list[str] = Field(
        [],
        description="Origins (scheme://host[:port]) of web pages on other sites that may call the API from a "
        "browser, e.g. https://chat.example.com; preflight requests from them are answered. Empty: none (the "
        "app at /app/ is on the API's own origin and needs none).",
    )
    hook_secret: SecretStr | None = Field(
        None,
        description="Shared secret an external broker sends in X-Switchboard-Hook-Secret to call /v1/mqtt/auth "
        "and /v1/mqtt/acl; unset: the hooks take only HTTP Basic of a service account (the bridge's).",
    )
    metrics_host: str = Field("0.0.0.0", description="Address of the API's Prometheus /metrics.")
    metrics_port: int | None = Field(
        9103, ge=0, le=65535, description="Port of the API's /metrics (0 picks a free port); null turns it off."
    )
    stop_timeout_seconds: int = Field(
        20,
        ge=1,
        le=600,
        description="On SIGTERM, how long requests in progress may take to finish before their connections close.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=2**30,
        description="Largest request body, in bytes, except uploads (media.max_bytes); a larger one is refused with "
        "413 before it is read.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long a client may take to send a request's headers, from connecting or from the end of its "
        "previous response; a slower one gets 408 and is disconnected.",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Most HTTP connections at once; more get 503 and are closed, so the API cannot take the file "
        "descriptors the broker needs (they share one process in `switchboard up`).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes serving the one port (uvicorn workers), for more than one core; `switchboard "
        "api` only (`switchboard up` runs one, beside the broker). Each has its own token cache and change watch.",
    )
    token_cache_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long an API process answers a bearer token it verified from memory before asking the "
        "database again (0: every request asks). Revocations (disable, delete, password reset) end cached tokens at "
        "once in the process that made them and, through the change watch, in the others (see docs/performance.md).",
    )
    sync_poll_seconds: float = Field(
        0.05,
        gt=0,
        le=5,
        description="On SQLite, how often each API process reads the change streams' heads to wake long-polling "
        "/v1/sync requests and forget revoked tokens (on Postgres it LISTENs instead).",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port] with no path, e.g. https://chat.example.com"
                )
        return origins


class LoginSettings(_Section):
    """Throttling of failed logins, over MQTT and HTTP alike (switchboard/logins.py)."""

    max_failures: int = Field(
        10,
        ge=1,
        description="Failed logins for one user from one address within window_seconds; then that address is "
        "refused for that user (MQTT: not authorized, HTTP: 429) until the window closes.",
    )
    window_seconds: float = Field(
        900, ge=1, le=86400, description="How long failures are counted, from the first one of a user and address."
    )
    backoff_after: int = Field(
        3,
        ge=1,
        description="Failures of a user (from every address) after which each failing address must wait before "
        "its next try for that user: 1 s, doubling with each further failure, at most backoff_max_seconds.",
    )
    backoff_max_seconds: float = Field(
        10, ge=0, le=300, description="Longest wait the per-user backoff imposes after an address's own failure."
    )


class BridgeSettings(_Section):
    """How the bridge reaches the broker, and the service account it logs in with."""

    broker_host: str = Field("127.0.0.1", description="Broker host the bridge connects to.")
    broker_port: int = Field(1883, ge=1, le=65535, description="Broker port the bridge connects to.")
    broker_fallbacks: list[str] = Field(
        default_factory=list,
        description='Other nodes of a clustered broker, as "host:port" (e.g. ["rabbit-2:1883", "rabbit-3:1883"]): '
        "when the broker at broker_host:broker_port cannot be reached, the bridge tries these in turn. Its "
        "persistent session must be one the cluster keeps across nodes (RabbitMQ quorum queues, EMQX).",
    )
    username: str = Field(
        "switchboard-bridge",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Service account the bridge logs in as.",
    )
    password: SecretStr | None = Field(
        None,
        description="Service account password. `switchboard up` makes a fresh one when unset; "
        "set it for `switchboard broker` and `switchboard bridge` run apart.",
    )
    broker_tls: bool = Field(
        False,
        description="Connect to the broker over TLS (its TLS port, e.g. mqtt.tls_port), verifying its certificate "
        "and host name against bridge.broker_ca_file, or the system's trusted CAs when that is null.",
    )
    broker_ca_file: str | None = Field(
        None,
        description="PEM file of the CA certificate(s) the broker's TLS certificate is checked against (a private "
        "CA, or the broker's self-signed certificate itself); null: the system's trusted CAs.",
    )
    client_id: str = Field("switchboard-bridge", description="MQTT client id of the bridge's session.")
    shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Subscribe through $share/GROUP/... so several bridges split the traffic (Switchboard's "
        "own broker, Mosquitto, EMQX, VerneMQ); give each bridge its own client_id.",
    )
    metrics_host: str = Field("0.0.0.0", description="Address of the bridge's Prometheus /metrics.")
    metrics_port: int | None = Field(9101, ge=0, le=65535, description="Port of /metrics; null turns it off.")
    batch_size: int = Field(2000, ge=1, le=10000, description="Most messages stored in one transaction.")
    batch_wait_ms: int = Field(5, ge=0, le=1000, description="How long a batch waits to fill, in ms.")
    stop_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=600,
        description="On SIGTERM, how long the bridge may take to commit and acknowledge the batch in hand "
        "(longer only while the database is unreachable); a batch still held then stays with the broker.",
    )
    live_events_poll_ms: int = Field(
        50,
        ge=1,
        le=10000,
        description="How often the bridge looks for MQTT events made outside the broker (a read receipt "
        "through REST) to publish, in ms: on SQLite the most such an event waits. On Postgres a notification "
        "wakes the bridge at the commit, and it looks on its own only every max(this, 1 s).",
    )

    @field_validator("broker_fallbacks")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f'{address!r} is not "host:port" (a port from 1 to 65535), e.g. "rabbit-2:1883"')
        return value

    def broker_addresses(self) -> list[tuple[str, int]]:
        """The broker first, then its fallbacks, as (host, port)."""
        fallbacks = [address.rpartition(":") for address in self.broker_fallbacks]
        return [(self.broker_host, self.broker_port), *((host, int(port)) for host, _, port in fallbacks)]

    @model_validator(mode="after")
    def _tls_complete(self) -> BridgeSettings:
        if self.broker_ca_file is not None:
            if not self.broker_tls:
                raise ValueError("bridge.broker_ca_file is set but bridge.broker_tls is false: set it true")
            if not Path(self.broker_ca_file).is_file():
                raise ValueError(f"bridge.broker_ca_file = {self.broker_ca_file!r}: no such file")
        return self


MEDIA_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "audio/mpeg",
    "audio/ogg",
    "audio/mp4",
    "audio/wav",
    "video/mp4",
    "application/pdf",
)


class MediaSettings(_Section):
    """Where shared files (photos, voice notes, documents) are kept, and what is accepted."""

    backend: Literal["local", "s3"] = Field(
        "local", description="local (files under media.directory) or s3 (an S3-compatible bucket; untested here)."
    )
    directory: str = Field("./var/media", description="Where the local backend keeps files (content-addressed).")
    max_bytes: int = Field(25 * 1024 * 1024, ge=1, le=2**34, description="Largest upload, in bytes (25 MiB).")
    allowed_types: list[str] = Field(
        list(MEDIA_TYPES),
        description="Content types accepted, as sniffed from the bytes (the client's Content-Type is not trusted). "
        "Choose among: " + ", ".join(MEDIA_TYPES) + ".",
    )
    thumbnail_pixels: int = Field(320, ge=16, le=2048, description="Longest side of an image's thumbnail.")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com.")
    s3_bucket: str | None = Field(None, description="S3 bucket (must exist).")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key: str | None = Field(None, description="S3 access key id.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key.")

    @field_validator("allowed_types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(MEDIA_TYPES))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} cannot be recognised from the bytes; choose among {', '.join(MEDIA_TYPES)}"
            )
        return types

    @model_validator(mode="after")
    def _s3_complete(self) -> MediaSettings:
        if self.backend == "s3":
            missing = [
                name
                for name in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"media.backend s3 needs {', '.join('media.' + m for m in missing)}")
        return self


class NotifySettings(_Section):
    """Notifications for users who are offline when a message reaches them, sent to an operator's webhook."""

    webhook_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Where the bridge POSTs notifications for offline users; null turns notifications off.",
    )
    secret: SecretStr | None = Field(
        None, description="Key of the X-Switchboard-Signature HMAC-SHA256 header; required with webhook_url."
    )
    batch_seconds: float = Field(
        2.0, ge=0, le=3600, description="How long a user's messages gather into one notification (a burst is one)."
    )
    batch_max_messages: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most messages in one notification: a bigger backlog for one user is sent as several "
        "notifications (this bounds the rows one notifier transaction takes per user).",
    )
    preview_chars: int = Field(100, ge=0, le=1000, description="Characters of the message body in the preview.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="How long one webhook call may take.")
    max_backoff_seconds: float = Field(
        300.0, ge=1, le=86400, description="Longest wait between retries of a failing webhook (doubling from 1 s)."
    )

    @model_validator(mode="after")
    def _secret_with_url(self) -> NotifySettings:
        if self.webhook_url is not None and self.secret is None:
            raise ValueError("notify.webhook_url needs notify.secret (SWITCHBOARD_NOTIFY__SECRET) to sign requests")
        return self


class PresenceSettings(_Section):
    """How long a user's "online" is believed without news of it."""

    online_ttl_seconds: float | None = Field(
        None,
        ge=5,
        le=86400,
        description='null: a user is online from its presence/{user} "online" until its "offline" (Switchboard\'s '
        "broker publishes both, and the will when a connection dies). Set it on a clustered broker whose wills "
        'cannot be trusted (RabbitMQ: a node that dies takes its clients\' wills with it): an "online" older than '
        "this many seconds is then served as offline (REST, console, notifications), so clients republish "
        'presence/{me} {"status": "online"} more often than that (e.g. every third of it).',
    )


class LogSettings(_Section):
    """What the services log and how."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    format: Literal["text", "json"] = Field(
        "text",
        description="text (one line per record for people) or json (one object per line with time, level, logger,"
        " message, and client_id, user and topic where they apply).",
    )


class Settings(BaseSettings):
    """Everything Switchboard can be told. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="forbid",
        validate_default=True,
    )

    database_url: str = Field(
        "sqlite:///./var/switchboard.db",
        description="sqlite:///PATH (embedded; a relative PATH is from the folder the command runs in, "
        "sqlite:////abs/path is absolute) or postgresql+psycopg://user:pass@host:port/db (postgresql:// is the "
        "same). Nothing else is accepted.",
    )
    log: LogSettings = LogSettings()
    mqtt: MqttSettings = MqttSettings()
    chat: ChatSettings = ChatSettings()
    api: ApiSettings = ApiSettings()
    login: LoginSettings = LoginSettings()
    bridge: BridgeSettings = BridgeSettings()
    media: MediaSettings = MediaSettings()
    notify: NotifySettings = NotifySettings()
    presence: PresenceSettings = PresenceSettings()

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        parse_database_url(url)
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is priority: explicit arguments (the YAML file's values), overridden by env.
        return (env_settings, init_settings)


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Build settings from defaults, the YAML file, then ``SWITCHBOARD_*`` environment variables.

    ``config_file`` None means ``$SWITCHBOARD_CONFIG``, else ``config/switchboard.yaml`` when it exists.
    """
    path = _config_path(config_file, os.environ)
    file_values = _read_yaml(path) if path else {}
    _reject_unknown_env(os.environ)
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, os.environ)) from None


def _config_path(config_file: str | Path | None, env: Any) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist: check the --config path")
        return path
    if env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={str(path)!r} does not exist: point it at a YAML file or unset it")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _reject_unknown_env(env: Any) -> None:
    """pydantic-settings ignores unknown top-level variables; a typo must not pass silently."""
    for key in _unknown_env(env):
        raise ConfigError(_unknown_env_message(key))


def _known_env() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_ENV}


def _unknown_env(env: Any) -> list[str]:
    known = _known_env()
    found = []
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX) or key in known:
            continue
        top = key[len(ENV_PREFIX) :].split("__", 1)[0]
        if (ENV_PREFIX + top) not in known:
            found.append(key)
    return found


def _unknown_env_message(key: str) -> str:
    choices = ", ".join(sorted(k for k in _known_env() if k != CONFIG_ENV))
    return f"unknown setting {key}: remove it or use one of {choices}"


def check_settings(config_file: str | Path | None = None) -> list[str]:
    """Every problem with the configuration (file, environment, values), one line each; [] when it is good."""
    try:
        path = _config_path(config_file, os.environ)
        file_values = _read_yaml(path) if path else {}
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    for key in _unknown_env(os.environ):
        problems.append(_unknown_env_message(key))
    try:
        Settings(**file_values)
    except ValidationError as exc:
        problems += [_describe_error(error, path, os.environ) for error in exc.errors()]
    return problems


def _describe(exc: ValidationError, path: Path | None, env: Any) -> str:
    """One line for the first problem, with a count of the rest."""
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more problem(s); `switchboard config check` lists them)" if len(errors) > 1 else ""
    return _describe_error(errors[0], path, env) + more


def _describe_error(error: Any, path: Path | None, env: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    env_name = ENV_PREFIX + "__".join(part.upper() for part in loc)
    source = f"environment variable {env_name}" if env_name in env else f"config file {str(path)!r}"
    if isinstance(error["input"], dict):  # a check across several settings of one section
        return f"{error['msg'].removeprefix('Value error, ')}: fix the settings"
    if error["type"] == "extra_forbidden":
        return f"unknown setting {dotted!r} in {source}: remove it or check the spelling"
    hint = _field_description(loc)
    value = error["input"]
    if loc == ["database_url"] and isinstance(value, str):
        value = masked_database_url(value)  # it may hold a password
    return f"bad value for {dotted} ({env_name}) = {value!r} from {source}: {error['msg']}; expected: {hint}"


def _field_description(loc: list[str]) -> str:
    model: type[BaseModel] = Settings
    info: FieldInfo | None = None
    for part in loc:
        info = model.model_fields.get(part)
        if info is None:
            break
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    if info is not None and info.description:
        return info.description
    return "see docs/configuration.md"
