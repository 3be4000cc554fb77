"""Every metric the gateway exports, defined in one place.

Names follow Prometheus conventions (``hssk_`` prefix, base units, ``_total`` counters). Label
values are bounded: transport, plugin, ACK code, and what a sender writes only as far as the
configuration knows it (see :class:`LabelValues`): message type, facility code — never a
patient identifier. Each gateway instance has its own registry so that tests can run several
side by side.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from gateway.config import ClientConfig
from gateway.formats.xml130_reader import CHECK_IN_KIND, CLAIM_KIND
from gateway.model.hooks import PluginDescription

_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: The label value of everything a sender wrote that the configuration does not know.
OTHER = "other"

#: XML 130 intake's message types (:mod:`gateway.core.documents`), a closed set like HL7's.
_DOCUMENT_TYPES = frozenset({CLAIM_KIND, CHECK_IN_KIND})


@dataclass(frozen=True)
class LabelValues:
    """The values the labels a sender writes may take. A shape check is no bound (``9xxxx``
    facilities, ``Z01^Z01`` types: one series per stranger), so only configured values keep their
    own series: the facilities of ``[clients.NAME]`` and those the plugins claim, the message types
    the plugins claim and the XML 130 kinds. Anything else is ``other``."""

    facilities: frozenset[str] = frozenset()
    message_types: frozenset[str] = _DOCUMENT_TYPES

    @classmethod
    def known(cls, clients: Iterable[ClientConfig], plugins: Iterable[PluginDescription],
              source_types: frozenset[str] = frozenset()) -> LabelValues:
        """From the configured clients, what the loaded plugins describe (``hssk_describe``) and
        the message types the registered sources declare (``Source.message_types``)."""
        plugins = list(plugins)
        return cls(frozenset(code for client in clients for code in client.facilities)
                   | frozenset(code for p in plugins for code in p.facilities),
                   _DOCUMENT_TYPES | source_types | frozenset(t for p in plugins for t in p.message_types))

    def facility(self, code: str) -> str:
        return code if code in self.facilities else OTHER

    def message_type(self, message_type: str) -> str:
        return message_type if message_type in self.message_types else OTHER


def reason_label(reason: str) -> str:
    """A renderer's reason for not rendering (``no_episode``) as a label; a plugin's reason that
    is no short lower-case word is ``other``, so labels stay bounded whatever a plugin writes."""
    return reason if _REASON.match(reason or "") else "other"


class Metrics:
    """``labels`` bounds what senders write into label values (default: every facility and HL7
    type is ``other``)."""

    def __init__(self, labels: LabelValues = LabelValues()) -> None:
        self.labels = labels
        self.registry = CollectorRegistry()
        r = self.registry
        self.node_info = Gauge(
            "hssk_node_info", "1, naming this gateway node and its journal backend (sqlite, or postgresql where "
            "several nodes share one journal; outbox gauges then count the shared outbox, the same on every node).",
            ["node", "backend"], registry=r)
        self.messages_received = Counter(
            "hssk_messages_received_total", "Messages answered, by transport, claiming plugin and message type.",
            ["transport", "plugin", "message_type"], registry=r)
        self.acks = Counter(
            "hssk_acks_total", "Acknowledgements decided, by transport, application ACK code and sending facility.",
            ["transport", "code", "facility"], registry=r)
        self.ack_latency = Histogram(
            "hssk_ack_latency_seconds", "Time from a complete message received to its answer written.",
            ["transport"], buckets=LATENCY_BUCKETS, registry=r)
        self.commit_batch_size = Histogram(
            "hssk_commit_batch_size", "Messages journaled per SQLite commit (group commit).",
            buckets=BATCH_BUCKETS, registry=r)
        self.commit_duration = Histogram(
            "hssk_commit_duration_seconds", "Time one journal commit (with fsync) takes.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.commit_failures = Counter(
            "hssk_commit_failures_total", "Journal commits that failed; their messages were answered AR.", registry=r)
        self.checkpoint_duration = Histogram(
            "hssk_journal_checkpoint_duration_seconds",
            "Time one WAL checkpoint takes, by who ran it: the checkpoint thread, or the journal writer between "
            "commits when the WAL grew too long.", ["by"], buckets=LATENCY_BUCKETS, registry=r)
        self.checkpoint_failures = Counter(
            "hssk_journal_checkpoint_failures_total", "WAL checkpoints that raised an SQLite error.", registry=r)
        self.wal_frames = Gauge(
            "hssk_journal_wal_frames", "Pages in the journal's WAL file at the last checkpoint.", registry=r)
        self.wal_frames_not_copied = Gauge(
            "hssk_journal_wal_frames_not_copied",
            "WAL pages the last checkpoint could not copy into the database file: a value that stays high "
            "means a reader holds an old snapshot and the WAL keeps growing.", registry=r)
        self.framing_violations = Counter(
            "hssk_mllp_framing_violations_total", "MLLP framing problems, by kind.", ["kind"], registry=r)
        self.charset_errors = Counter(
            "hssk_charset_errors_total", "Messages whose bytes did not decode in their declared charset.",
            ["transport"], registry=r)
        self.plugin_exceptions = Counter(
            "hssk_plugin_exceptions_total", "Exceptions raised by plugins, by plugin and pipeline stage.",
            ["plugin", "stage"], registry=r)
        self.plugin_timeouts = Counter(
            "hssk_plugin_timeouts_total", "Messages answered AR because the pipeline did not decide in time.",
            ["plugin"], registry=r)
        self.stuck_workers = Gauge(
            "hssk_pipeline_stuck_workers", "Pipeline worker threads still inside a plugin call that timed out "
            "(each has been replaced, up to 4 x pipeline.workers threads in all).", registry=r)
        self.pipeline_worker_deaths = Counter(
            "hssk_pipeline_worker_deaths_total", "Pipeline worker threads ended by an exception that escaped the "
            "pipeline (each was replaced and its message answered AE 207).", registry=r)
        self.pipeline_processes = Gauge(
            "hssk_pipeline_processes_ready", "Child processes ready to decide (pipeline.isolation = \"processes\").",
            registry=r)
        self.pipeline_process_restarts = Counter(
            "hssk_pipeline_process_restarts_total", "Pipeline child processes started again, by why the previous "
            "one ended: timeout (killed), crash (ended while deciding), idle (ended between messages), "
            "start (ended or failed before it was ready).", ["reason"], registry=r)
        self.open_connections = Gauge(
            "hssk_open_connections", "Open inbound connections.", ["transport"], registry=r)
        self.connections_refused = Counter(
            "hssk_connections_refused_total", "Inbound connections or messages refused at a bound.",
            ["transport", "reason"], registry=r)
        self.connections_paused = Counter(
            "hssk_connections_paused_total", "Times a connection was no longer read because it had its own bound "
            "of messages in flight (mllp.max_in_flight_per_connection): a sender pipelining faster than the "
            "gateway decides.", ["transport"], registry=r)
        self.duplicates_suppressed = Counter(
            "hssk_duplicates_suppressed_total", "Repeated messages answered from the journal without processing.",
            ["transport"], registry=r)
        self.privacy_removed = Counter(
            "hssk_privacy_removed_total", "Items the privacy policy removed from accepted records before they were "
            "queued for a destination (privacy = \"filtered\"), by category (hiv, drug_use, sex_work) and part "
            "(diagnosis, text, encounter, medication, service, observation, note, immunization, table, message).",
            ["destination", "category", "part"], registry=r)
        self.records_not_routed = Counter(
            "hssk_records_not_routed_total", "Record sets of accepted messages a destination's routes took but its "
            "format cannot carry, so it was not queued for it (the answer unchanged), by destination and reason "
            "(no_episode, not_hl7, privacy, privacy_unknown, or a plugin's).", ["destination", "reason"], registry=r)
        self.in_flight = Gauge(
            "hssk_messages_in_flight", "Messages received but not yet answered.", registry=r)
        self.lookups = Counter(
            "hssk_lookups_total", "Remote lookups plugins asked for before deciding (hssk_lookups), by service and "
            "outcome (answered, failed, timeout).", ["service", "outcome"], registry=r)
        self.lookups_waiting = Gauge(
            "hssk_lookups_waiting", "Lookups asked for and waiting for a place under their service's max_concurrent.",
            ["service"], registry=r)
        self.lookup_duration = Histogram(
            "hssk_lookup_duration_seconds", "Time from a lookup asked to its answer (or timeout), waiting for a place "
            "under the service's max_concurrent included.", ["service"], buckets=LATENCY_BUCKETS, registry=r)

        self.outbox_rows = Gauge(
            "hssk_outbox_rows", "Outbox rows per destination and state (refreshed from the journal).",
            ["destination", "state"], registry=r)
        self.outbox_oldest_pending_age = Gauge(
            "hssk_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered row per destination.",
            ["destination"], registry=r)
        self.outbox_in_flight = Gauge(
            "hssk_outbox_deliveries_in_flight", "Deliveries started and not yet settled, per destination.",
            ["destination"], registry=r)
        self.delivery_attempts = Counter(
            "hssk_delivery_attempts_total", "Delivery attempts by destination, resulting row state "
            "(delivered, pending = will retry, dead) and result (2xx, 4xx, 5xx, timeout, connection, ACK code).",
            ["destination", "outcome", "result"], registry=r)
        self.delivery_latency = Histogram(
            "hssk_delivery_latency_seconds", "Time from commit to delivered, per destination.", ["destination"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 21600, 86400, 604800), registry=r)
        self.circuit_state = Gauge(
            "hssk_destination_circuit_state", "Circuit breaker per destination: 0 closed, 1 half-open, 2 open.",
            ["destination"], registry=r)
        self.destination_paused = Gauge(
            "hssk_destination_paused", "1 when an operator paused the destination.", ["destination"], registry=r)
        self.batch_files = Counter(
            "hssk_batch_files_total", "Batch files produced and accepted by their sink, per destination.",
            ["destination"], registry=r)
        self.pruned_rows = Counter(
            "hssk_outbox_pruned_rows_total", "Delivered outbox rows removed after the retention period.", registry=r)
        self.replays = Counter(
            "hssk_messages_replayed_total", "Journaled messages decided again by a replay, by the new decision's "
            "ACK code (none: an inbound ACK).", ["code"], registry=r)
        self.pruned_bodies = Counter(
            "hssk_journal_bodies_pruned_total", "Journaled messages whose bytes and records were blanked after "
            "their retention period, by journal status (accepted, error, rejected, ignored).", ["status"],
            registry=r)

        self.provisional_persons = Gauge(
            "hssk_persons_provisional", "Provisional persons (newborns registered under the mother's name) not yet "
            "named by a record of their own (refreshed from the person index).", registry=r)
        self.provisional_oldest_age = Gauge(
            "hssk_persons_provisional_oldest_age_seconds", "Age of the oldest provisional person still open.",
            registry=r)
        self.identity_links = Counter(
            "hssk_identity_links_total", "Identity links the person index made, by how: automatic (a record named "
            "a provisional person), reviewed (an operator's decision), sender (an ADT^A40 merge).", ["how"],
            registry=r)
        self.identity_updates = Counter(
            "hssk_identity_updates_total", "Identity links announced to the plugins, whose identity updates (merge "
            "events) are queued, by how the link was made.", ["how"], registry=r)
        self.identity_reviews_waiting = Gauge(
            "hssk_identity_reviews_waiting", "Ambiguous identity cases (twins without a birth order, two "
            "candidates, a mother known by other identifiers) waiting for an operator's review.", registry=r)

        self.audit_entries = Counter(
            "hssk_audit_entries_total", "Entries chained into the audit log, by action (auth, outbox.retry, "
            "messages.read …) and outcome (ok, refused, failed); CLI entries are counted by the running gateway "
            "at its next outbox refresh.", ["action", "outcome"], registry=r)
        self.auth_failures = Counter(
            "hssk_auth_failures_total", "Authentications refused, by surface (http, mllp, admin): wrong or unknown "
            "credentials, an unknown sender while auth.required, the admin API without its token.", ["surface"],
            registry=r)
        self.audit_dropped = Counter(
            "hssk_audit_entries_dropped_total", "Audit entries dropped because the journal could not be written "
            "for so long that more than 10 000 waited.", registry=r)
        self.facility_last_message = Gauge(
            "hssk_facility_last_message_timestamp_seconds", "When the newest message of each configured facility "
            "was received (Unix time; from the journal at start, then as messages are answered).", ["facility"],
            registry=r)
        self.facility_silence_threshold = Gauge(
            "hssk_facility_silence_threshold_seconds", "How long each configured facility may send nothing before "
            "it counts as silent (feeds.silent_after_hours, or its own in feeds.silent_after_hours_by_facility).",
            ["facility"], registry=r)
        # Plugin gauges: values a plugin's hssk_gauges reports (gateway.core.plugin_gauges), by name.
        self.bhxh_reconcile_episodes = Gauge(
            "hssk_bhxh_reconcile_episodes", "XML 130 episodes (MA_LK) of the reconciliation window, by facility and "
            "side: received, store (delivered to the record store), bhxh_submitted, bhxh_accepted, bhxh_refused, "
            "missing_at_bhxh, missing_at_store (the BHXH plugin, refreshed every plugins.gauges_seconds).",
            ["facility", "side"], registry=r)
        self.bhxh_reconcile_gap = Gauge(
            "hssk_bhxh_reconcile_gap_episodes", "Settled episodes of the window on one side only, by facility and "
            "side: missing_at_bhxh (at the record store, not accepted by BHXH) and missing_at_store.",
            ["facility", "side"], registry=r)
        self.bhxh_reconcile_gap_threshold = Gauge(
            "hssk_bhxh_reconcile_gap_threshold_episodes", "The gap above which the reconciliation alert fires "
            "(plugins.bhxh.reconcile.gap_alert_threshold).", registry=r)
        self.plugin_gauges = {g._name: g for g in (self.bhxh_reconcile_episodes, self.bhxh_reconcile_gap,
                                                    self.bhxh_reconcile_gap_threshold)}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
