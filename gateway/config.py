"""Gateway configuration: TOML file, then environment, then command-line flags.

Everything is validated before anything listens, and every error names the key and the rule it
broke (``mllp.max_frame_bytes: must be a positive integer, got -1``), because the person reading
it is an operator at a provincial data centre, not the author of this module.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "HSSK_"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: twisted.logger's level names, least severe first.
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration value breaks a rule; ``key`` is the dotted path of the offending value."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"{key}: {rule}")
        self.key = key
        self.rule = rule


def _positive(value: Any) -> bool:
    return value > 0


def _check(rule: str, test) -> dict:
    return {"rule": rule, "test": test}


def setting(default: Any = dataclasses.MISSING, *, rule: str = "", test: Callable[[Any], bool] | None = None) -> Any:
    """A key of a settings table that a plugin declares (a destination kind's), with its default
    and the rule its value must keep, as the gateway's own keys are declared::

        @dataclass(frozen=True)
        class SftpSettings:
            host: str = setting()                      # no default: the key is required
            port: int = setting(22, rule="must be a port number", test=lambda v: 0 < v < 65536)

    The field's type (``str``, ``int``, ``float``, ``bool``, ``tuple[str, ...]``) is checked
    first; then ``test``, and a value it refuses is an error naming the dotted key and ``rule``."""
    metadata = _check(rule, test) if test is not None else {}
    return field(default=default, metadata=metadata)


def build_settings(cls: type, table: Mapping[str, Any], prefix: str, also_known: Iterable[str] = ()) -> Any:
    """``cls`` (a dataclass of settings) from ``table``, every value checked as :func:`load_config`
    checks the gateway's own: an unknown key, a missing required one, a value of the wrong type or
    one its rule refuses is a :class:`ConfigError` named ``prefix + key``. ``also_known`` are keys
    the same table holds for someone else (a destination's common keys), listed in the error."""
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in table]
    if missing:
        raise ConfigError(prefix + missing[0], "is required")
    return _build_dataclass(cls, table, prefix, also_known=frozenset(also_known))


@dataclass(frozen=True)
class MllpConfig:
    listen: str = "tcp:2575:interface=127.0.0.1"
    max_frame_bytes: int = field(default=32 * MiB, metadata=_check("must be a positive integer", _positive))
    max_connections: int = field(default=512, metadata=_check("must be a positive integer", _positive))
    #: Connections one address may hold, so one host (or one misbehaving interface engine) cannot
    #: take the whole of ``max_connections`` from the others.
    max_connections_per_peer: int = field(default=32, metadata=_check("must be a positive integer", _positive))
    #: Messages one connection may have in flight (received, not yet answered). A sender that
    #: pipelines past it is no longer read (TCP pushes back) until its answers drain, so one
    #: flooding connection cannot fill ``pipeline.max_in_flight``, which every facility shares,
    #: nor queue its backlog ahead of the other connections' messages.
    max_in_flight_per_connection: int = field(default=32, metadata=_check("must be a positive integer", _positive))
    idle_timeout_seconds: float = field(default=300.0, metadata=_check("must be a positive number", _positive))
    charset: str = ""
    default_charset: str = "utf-8"
    #: TLS the gateway terminates itself (gateway.transports.tls): PEM certificate (chain after
    #: it) and key; with tls_client_ca, clients must present a certificate from that CA bundle.
    tls_certificate: str = ""
    tls_private_key: str = ""
    tls_client_ca: str = ""


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "tcp:8080:interface=127.0.0.1"
    max_body_bytes: int = field(default=32 * MiB, metadata=_check("must be a positive integer", _positive))
    max_connections: int = field(default=1024, metadata=_check("must be a positive integer", _positive))
    max_connections_per_peer: int = field(default=64, metadata=_check("must be a positive integer", _positive))
    #: A connection that sends nothing for this long between requests is closed.
    idle_timeout_seconds: float = field(default=60.0, metadata=_check("must be a positive number", _positive))
    #: A request must have arrived whole (headers and body) this long after its first byte, so a
    #: sender trickling bytes (slowloris) cannot hold a connection for ever.
    request_timeout_seconds: float = field(default=300.0, metadata=_check("must be a positive number", _positive))
    tls_certificate: str = ""
    tls_private_key: str = ""
    tls_client_ca: str = ""


@dataclass(frozen=True)
class StoreConfig:
    """Where the journal lives. ``backend`` "sqlite" (the default: one file in the data dir, one
    gateway) or "postgresql" (one database several nodes share, ``gateway.core.postgres``): then
    ``dsn_env`` names the environment variable holding the libpq connection string (it may carry a
    password, so it is never a config key), ``node`` names this node (unique among the nodes; it
    owns the outbox rows it has in flight, and a restarted node takes its own back at once), and a
    row in flight is another node's to take ``lease_seconds`` after it was claimed: longer than
    any destination's timeout. ``synchronous`` is SQLite's fsync policy."""

    backend: str = field(default="sqlite", metadata=_check(
        "must be 'sqlite' or 'postgresql'", lambda v: v in ("sqlite", "postgresql")))
    dsn_env: str = "HSSK_STORE_DSN"
    node: str = ""
    lease_seconds: float = field(default=120.0, metadata=_check("must be a positive number", _positive))
    synchronous: str = field(
        default="FULL",
        metadata=_check(f"must be one of {', '.join(SYNCHRONOUS_LEVELS)}", lambda v: v.upper() in SYNCHRONOUS_LEVELS),
    )
    max_batch: int = field(default=512, metadata=_check("must be a positive integer", _positive))
    min_free_disk_bytes: int = field(default=256 * MiB, metadata=_check("must be zero or more", lambda v: v >= 0))


@dataclass(frozen=True)
class PipelineConfig:
    workers: int = field(default=2, metadata=_check("must be between 1 and 64", lambda v: 1 <= v <= 64))
    #: "threads": workers decide in the gateway's process; "processes": each worker asks a child
    #: process of its own (gateway.core.pipeline_process).
    isolation: str = field(default="threads", metadata=_check(
        "must be 'threads' or 'processes'", lambda v: v in ("threads", "processes")))
    #: With "processes": the CPUs the child processes may run on (empty: the gateway's own), so
    #: they can be kept off the core the gateway's reactor and journal writer use.
    process_cpus: tuple[int, ...] = field(default=(), metadata=_check(
        f"must list CPU numbers this machine has (0 to {(os.cpu_count() or 1) - 1})",
        lambda v: all(0 <= c < (os.cpu_count() or 1) for c in v)))
    timeout_seconds: float = field(default=10.0, metadata=_check("must be a positive number", _positive))
    max_in_flight: int = field(default=10000, metadata=_check("must be a positive integer", _positive))
    supported_versions: tuple[str, ...] = (
        "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
    )


@dataclass(frozen=True)
class ValidationConfig:
    """The identifier and claim rules that the standards reference leaves uncertain
    (``gateway.rules.identifiers`` and ``gateway.rules.validation`` say why for each)."""

    province_codes: str = field(default="2024", metadata=_check(
        "must be '2024' (63 provinces) or '2025' (34 after the 07/2025 merger)", lambda v: v in ("2024", "2025")))
    check_cccd_birth: bool = True
    bhyt_groups: tuple[str, ...] = ()
    accept_bhxh_number_as_card: bool = False
    facility_pattern: str = r"\d{5}"
    check_facility_province: bool = False
    totals_tolerance: float = field(default=1.0, metadata=_check("must be zero or more", lambda v: v >= 0))
    max_secondary_diagnoses: int = field(default=12, metadata=_check("must be a positive integer", _positive))


@dataclass(frozen=True)
class OutboxConfig:
    max_pending: int = field(default=1_000_000, metadata=_check("must be a positive integer", _positive))
    poll_interval_seconds: float = field(default=1.0, metadata=_check("must be a positive number", _positive))
    retention_days: float = field(default=30.0, metadata=_check("must be a positive number", _positive))
    #: Days an AE/AR message keeps its bytes and records for operators to fix and replay it;
    #: unset, ``retention_days``.
    rejected_retention_days: float | None = field(default=None,
                                                  metadata=_check("must be a positive number", _positive))
    prune_batch: int = field(default=500, metadata=_check("must be a positive integer", _positive))

    @property
    def rejected_retention(self) -> float:
        """``rejected_retention_days``, or ``retention_days`` when it is not set."""
        return self.retention_days if self.rejected_retention_days is None else self.rejected_retention_days


_ICD10_PREFIXES = _check("must list ICD-10 codes or prefixes such as 'B20' or 'O98.7'",
                         lambda v: all(re.fullmatch(r"[A-Za-z]\d\d(\.?[0-9A-Za-z]{1,2})?", c) for c in v))


@dataclass(frozen=True)
class PrivacyConfig:
    """The lists behind the privacy policy (``gateway.rules.privacy``, which holds the defaults and
    says where they come from). A list left unset keeps the default; a list given replaces it,
    so a code the standards reference got wrong can be taken out as well as one added."""

    hiv_codes: tuple[str, ...] | None = field(default=None, metadata=_ICD10_PREFIXES)
    drug_use_codes: tuple[str, ...] | None = field(default=None, metadata=_ICD10_PREFIXES)
    sex_work_codes: tuple[str, ...] | None = field(default=None, metadata=_ICD10_PREFIXES)
    hiv_terms: tuple[str, ...] | None = None
    drug_use_terms: tuple[str, ...] | None = None
    sex_work_terms: tuple[str, ...] | None = None
    hiv_drugs: tuple[str, ...] | None = None
    drug_use_drugs: tuple[str, ...] | None = None
    sex_work_drugs: tuple[str, ...] | None = None
    hiv_shared_drugs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AuthConfig:
    """Who may send and who may operate (``gateway.core.clients`` says how a client is known).

    ``required`` false lets a sender that names no client in (the embedded default, so a fresh
    ``make run`` takes the sample messages); true refuses it. ``admin_token_env`` names the
    environment variable holding the ``/admin`` API's bearer token; unset, ``/admin`` answers
    loopback clients only. A peer address that presents wrong credentials ``max_failures`` times
    within ``failure_window_seconds`` is refused for ``lockout_seconds``; at most
    ``max_tracked_peers`` addresses are remembered (``gateway.core.auth_limits``)."""

    required: bool = False
    admin_token_env: str = ""
    max_failures: int = field(default=10, metadata=_check("must be a positive integer", _positive))
    failure_window_seconds: float = field(default=60.0, metadata=_check("must be a positive number", _positive))
    lockout_seconds: float = field(default=300.0, metadata=_check("must be a positive number", _positive))
    max_tracked_peers: int = field(default=10_000, metadata=_check("must be a positive integer", _positive))


def _syslog_address(value: str) -> bool:
    found = re.fullmatch(r"(udp|tcp):(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", value)
    return value == "" or (found is not None and 0 < int(found[3]) < 65536)


@dataclass(frozen=True)
class AuditConfig:
    """The audit log (``gateway.core.audit``): one entry per intake client success per surface,
    client and address per ``success_window_seconds``; ``syslog`` copies every entry to a
    collector, ``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (empty: no copy)."""

    success_window_seconds: float = field(default=3600.0, metadata=_check("must be a positive number", _positive))
    syslog: str = field(default="", metadata=_check("must be udp:HOST:PORT or tcp:HOST:PORT, e.g. udp:10.0.0.5:514",
                                                    _syslog_address))
    syslog_app_name: str = "hssk-gateway"


@dataclass(frozen=True)
class FeedsConfig:
    """Feed health (``gateway.core.feed_health``): a facility that sent nothing for
    ``silent_after_hours`` is silent; ``silent_after_hours_by_facility`` sets a facility's own
    (``{"79001" = 2}`` for a hospital that sends all day, ``{"79925" = 72}`` for a clinic closed
    at weekends)."""

    silent_after_hours: float = field(default=24.0, metadata=_check("must be a positive number", _positive))
    silent_after_hours_by_facility: Mapping[str, float] = field(default_factory=dict, metadata=_check(
        "must map facility codes to positive numbers of hours, e.g. {\"79001\" = 2}",
        lambda v: all(isinstance(h, float) and h > 0 for h in v.values())))


_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ClientConfig:
    """One ``[clients.NAME]`` table: a system that sends to the gateway."""

    name: str
    facilities: tuple[str, ...] = field(default=(), metadata=_check(
        "must list the facility codes (MSH-4, MACSKCB) this client may send for, e.g. ['79001']",
        lambda v: bool(v) and all(c.strip() and c == c.strip() for c in v)))
    token_sha256: tuple[str, ...] = field(default=(), metadata=_check(
        "must list SHA-256 digests (64 hex digits) of the client's bearer tokens; "
        "'hssk-gateway clients new-token' makes a token and its digest",
        lambda v: all(_SHA256_HEX.fullmatch(d) for d in v)))
    addresses: tuple[str, ...] = ()
    #: TLS client certificates that name this client: "sha256:<fingerprint>" or "subject:<RFC 4514 DN>".
    certificates: tuple[str, ...] = ()


PRIVACY_LEVELS = ("filtered", "full")


@dataclass(frozen=True)
class DestinationConfig:
    """One ``[destinations.NAME]`` table: the keys every destination has. The keys of its kind
    (``url`` for ``http``, ``endpoint`` for ``mllp`` …) are kept as written in ``options`` and
    validated by the kind once the plugins are loaded (:mod:`gateway.core.destination_kinds`),
    since a plugin may add kinds."""

    name: str
    kind: str = field(default="", metadata=_check("must be the name of a destination kind such as 'http'",
                                                  lambda v: bool(v)))
    format: str = "json"
    message_types: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    enabled: bool = True
    #: "filtered": HIV, drug-use and sex-work data removed first (gateway.rules.privacy); "full":
    #: everything, for the BHXH appraisal path only, which the law lets see it.
    privacy: str = field(default="filtered", metadata=_check("must be 'filtered' or 'full'",
                                                             lambda v: v in PRIVACY_LEVELS))
    max_in_flight: int = field(default=4, metadata=_check("must be between 1 and 256", lambda v: 1 <= v <= 256))
    max_attempts: int = field(default=20, metadata=_check("must be a positive integer", _positive))
    max_age_seconds: float = field(default=7 * 86400.0, metadata=_check("must be a positive number", _positive))
    backoff_base_seconds: float = field(default=1.0, metadata=_check("must be a positive number", _positive))
    backoff_cap_seconds: float = field(default=600.0, metadata=_check("must be a positive number", _positive))
    circuit_failures: int = field(default=5, metadata=_check("must be a positive integer", _positive))
    circuit_open_seconds: float = field(default=30.0, metadata=_check("must be a positive number", _positive))
    alert_pending_age_seconds: float = field(default=900.0, metadata=_check("must be a positive number", _positive))
    #: The kind's own keys, as written; its settings dataclass validates them.
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def key(self, name: str) -> str:
        """The dotted key of this table's ``name``, as a :class:`ConfigError` names it."""
        return f"destinations.{self.name}.{name}"

    def matches(self, message_type: str, plugin: str) -> bool:
        """Does this destination want records of ``message_type`` made by ``plugin``?
        Patterns are exact (``ORU^R01``) or prefix wildcards (``ADT^*``); empty means all."""
        if self.plugins and plugin not in self.plugins:
            return False
        if not self.message_types:
            return True
        return any(message_type == p or (p.endswith("*") and message_type.startswith(p[:-1]))
                   for p in self.message_types)


@dataclass(frozen=True)
class PluginsConfig:
    disabled: tuple[str, ...] = ()
    #: How often the running gateway asks the plugins for their gauges' values (hssk_gauges).
    gauges_seconds: float = field(default=60.0, metadata=_check("must be a positive number of seconds", _positive))
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayConfig:
    data_dir: str = "var"
    log_format: str = field(default="text", metadata=_check("must be 'text' or 'json'", lambda v: v in ("text", "json")))
    log_level: str = field(default="info", metadata=_check(f"must be one of {', '.join(LOG_LEVELS)}",
                                                           lambda v: v in LOG_LEVELS))
    mllp: MllpConfig = MllpConfig()
    http: HttpConfig = HttpConfig()
    store: StoreConfig = StoreConfig()
    pipeline: PipelineConfig = PipelineConfig()
    plugins: PluginsConfig = PluginsConfig()
    outbox: OutboxConfig = OutboxConfig()
    validation: ValidationConfig = ValidationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    auth: AuthConfig = AuthConfig()
    audit: AuditConfig = AuditConfig()
    feeds: FeedsConfig = FeedsConfig()
    destinations: tuple[DestinationConfig, ...] = ()
    clients: tuple[ClientConfig, ...] = ()

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir) / "gateway.db"

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table, empty when the file has none."""
        return self.plugins.settings.get(name, {})


_SECTIONS = {f.name: type(f.default) for f in dataclasses.fields(GatewayConfig) if dataclasses.is_dataclass(f.default)}
#: Keys outside any section (``data_dir``, ``log_format``, ``log_level``): ``HSSK_<KEY>`` sets them.
_TOP_LEVEL = frozenset(f.name for f in dataclasses.fields(GatewayConfig)
                       if f.type in ("str", str) and f.name not in _SECTIONS)


def load_config(
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Build the configuration from built-in defaults, a TOML file, ``HSSK_SECTION__KEY`` variables
    and dotted ``overrides`` (command-line flags), in that order of precedence, lowest first.

    >>> load_config(overrides={"mllp.listen": "tcp:0"}).mllp.listen
    'tcp:0'
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("--config", f"file {os.fspath(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"{os.fspath(path)!r} is not valid TOML: {e}") from None
    for key, value in _environment_overrides(environ if environ is not None else os.environ).items():
        _set_dotted(raw, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, key, value)
    return _build(raw)


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``HSSK_SECTION__KEY`` for a section's key, ``HSSK_KEY`` for a top-level one. Other ``HSSK_``
    variables (an admin token, ``HSSK_TRACE_STAGES``) are not configuration keys and are left alone."""
    found = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", ".")
        if "." not in key and key not in _TOP_LEVEL:
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        found[key] = value
    return found


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(key, f"{part!r} is a value, not a table")
    table[parts[-1]] = value


def _build(raw: Mapping[str, Any]) -> GatewayConfig:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "plugins":
            values["plugins"] = _build_plugins(value)
        elif key == "destinations":
            values["destinations"] = _build_destinations(value)
        elif key == "clients":
            values["clients"] = _build_clients(value)
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(key, "must be a table")
            values[key] = _build_dataclass(_SECTIONS[key], value, key + ".")
        else:
            values[key] = value
    config = _build_dataclass(GatewayConfig, values, "", nested=set(_SECTIONS) | {"plugins", "destinations", "clients"})
    _check_listener_tls("mllp", config.mllp)
    _check_listener_tls("http", config.http)
    if config.auth.required and not config.clients:
        raise ConfigError("auth.required", "is true but no [clients.NAME] table says who may send")
    return config


def _named_tables(raw: Any, section: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(name, key prefix, table)`` of each ``[section.NAME]``, with the shape checked."""
    if not isinstance(raw, Mapping):
        raise ConfigError(section, f"must be a table of [{section}.NAME] tables")
    for name, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{section}.{name}", "must be a table")
        if "name" in table:
            raise ConfigError(f"{section}.{name}.name", "is the table's own name; do not set it")
        yield name, f"{section}.{name}.", table


def _check_listener_tls(section: str, listener: MllpConfig | HttpConfig) -> None:
    """The gateway's own TLS needs a certificate and its key, and a plain endpoint to wrap."""
    if bool(listener.tls_certificate) != bool(listener.tls_private_key):
        missing = "tls_private_key" if listener.tls_certificate else "tls_certificate"
        raise ConfigError(f"{section}.{missing}", "tls_certificate and tls_private_key go together (PEM files)")
    if listener.tls_client_ca and not listener.tls_certificate:
        raise ConfigError(f"{section}.tls_client_ca", "needs tls_certificate and tls_private_key: the gateway "
                                                      "terminates TLS itself to ask for client certificates")
    if listener.tls_certificate and listener.listen.split(":", 1)[0].lower() in ("ssl", "tls"):
        raise ConfigError(f"{section}.listen", "is TLS already; with tls_certificate give the plain endpoint "
                                               "(tcp:PORT:interface=ADDRESS) and the gateway adds TLS")


def client_certificate_key(entry: str) -> str:
    """How ``clients.NAME.certificates`` entries are compared: ``sha256:`` and the fingerprint's
    64 hex digits in lower case (colons and spaces dropped, as ``openssl x509 -fingerprint`` prints
    them), or ``subject:`` and the distinguished name in RFC 4514 form. ValueError otherwise."""
    kind, _, value = entry.partition(":")
    if kind.lower() == "sha256":
        digest = re.sub(r"[\s:]", "", value).lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError("a sha256 fingerprint has 64 hex digits")
        return f"sha256:{digest}"
    if kind.lower() == "subject" and value.strip():
        from cryptography import x509

        return f"subject:{x509.Name.from_rfc4514_string(value.strip()).rfc4514_string()}"
    raise ValueError("must be 'sha256:<fingerprint>' or 'subject:<distinguished name>'")


def _build_clients(raw: Any) -> tuple[ClientConfig, ...]:
    built, digests, networks, certificates = [], {}, [], {}
    for name, prefix, table in _named_tables(raw, "clients"):
        if "facilities" not in table:
            raise ConfigError(prefix + "facilities", "is required: the facility codes this client may send for")
        client = _build_dataclass(ClientConfig, {"name": name, **table}, prefix)
        if not client.token_sha256 and not client.addresses and not client.certificates:
            raise ConfigError(prefix + "token_sha256", "a client needs token_sha256, addresses or certificates, "
                                                       "or it can never be recognised")
        for entry in client.certificates:
            try:
                key = client_certificate_key(entry)
            except ValueError as e:
                raise ConfigError(prefix + "certificates", f"{entry!r}: {e}") from None
            if key in certificates:
                raise ConfigError(prefix + "certificates", f"{entry!r} also names clients.{certificates[key]}")
            certificates[key] = name
        for digest in client.token_sha256:
            if digest.lower() in digests:
                raise ConfigError(prefix + "token_sha256", f"a token digest is also clients.{digests[digest.lower()]}'s")
            digests[digest.lower()] = name
        for address in client.addresses:
            try:
                network = ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ConfigError(prefix + "addresses", f"must list IP addresses or networks such as "
                                                        f"'10.1.0.7' or '10.1.0.0/24', got {address!r}") from None
            clash = next(((other, owner) for other, owner in networks
                          if other.version == network.version and other.overlaps(network)), None)
            if clash is not None:
                raise ConfigError(prefix + "addresses", f"{address} overlaps {clash[0]} of clients.{clash[1]}; "
                                                        f"an address names one client")
            networks.append((network, name))
        built.append(client)
    return tuple(built)


#: The keys of a ``[destinations.NAME]`` table that every kind shares.
_COMMON_DESTINATION_KEYS = frozenset(f.name for f in dataclasses.fields(DestinationConfig)) - {"options"}


def _build_destinations(raw: Any) -> tuple[DestinationConfig, ...]:
    built = []
    for name, prefix, table in _named_tables(raw, "destinations"):
        if "kind" not in table:
            raise ConfigError(prefix + "kind", "is required: the destination's kind (http, mllp, file, batch, "
                                               "or one a plugin adds)")
        common = {k: v for k, v in table.items() if k in _COMMON_DESTINATION_KEYS}
        options = {k: v for k, v in table.items() if k not in _COMMON_DESTINATION_KEYS}
        destination = _build_dataclass(DestinationConfig, {"name": name, **common}, prefix)
        destination = dataclasses.replace(destination, options=options)
        if destination.backoff_cap_seconds < destination.backoff_base_seconds:
            raise ConfigError(prefix + "backoff_cap_seconds", "must not be below backoff_base_seconds")
        built.append(destination)
    return tuple(built)


def _build_plugins(raw: Any) -> PluginsConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("plugins", "must be a table")
    settings = {k: v for k, v in raw.items() if isinstance(v, Mapping)}
    plain = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    base = _build_dataclass(PluginsConfig, plain, "plugins.", nested={"settings"})
    return dataclasses.replace(base, settings=settings)


def _build_dataclass(cls, raw: Mapping[str, Any], prefix: str, nested: set[str] = frozenset(),
                     also_known: frozenset[str] = frozenset()):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(prefix + key, f"unknown key (known keys: {', '.join(sorted(known.keys() | also_known))})")
        if key in nested:
            kwargs[key] = value
            continue
        f = known[key]
        value = _coerce(prefix + key, f, value)
        check = f.metadata.get("test")
        if check is not None and not check(value):
            raise ConfigError(prefix + key, f"{f.metadata['rule']}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = kind.removesuffix(" | None")  # optional: unset is the default, a given value has the type
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if kind == "tuple[int, ...]":
        if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise ConfigError(key, f"must be a list of integers, got {value!r}")
        return tuple(value)
    if kind == "Mapping[str, float]":
        if not isinstance(value, Mapping) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            raise ConfigError(key, f"must be a table of numbers, got {value!r}")
        return {str(k): float(v) for k, v in value.items()}
    if kind.startswith("tuple"):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"must be a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(f"no coercion for {key} of type {kind}")

