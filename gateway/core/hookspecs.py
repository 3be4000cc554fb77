"""The plugin contract: every hook a plugin may implement.

A plugin is a module (or object) with functions named like the specs below (``@hookimpl`` marks
them, and sets options such as ``tryfirst``; it and :class:`~gateway.model.hooks.PluginDescription`
live in :mod:`gateway.model.hooks`, below the national rules that are plugins too); it is found
through the ``hssk_gateway.plugins`` entry-point group, exactly like the bundled plugins. It
imports only from :mod:`gateway.plugin` and declares the contract version it was written for,
``hssk_contract = "1.0"`` (:mod:`gateway.core.contract` says which versions load). Any callable
whose name starts with ``hssk_`` is taken for a hook, so a misspelt one stops start-up rather
than never being called. A minimal plugin::

    from gateway.plugin import RecordSet, hookimpl

    hssk_contract = "1.0"

    class LabAdapter:
        name = "my_lab"

        def normalize(self, message):
            return RecordSet(kind=message.message_type)

    @hookimpl
    def hssk_identify(message):
        if message.sending_application == "MY_LIS":
            return LabAdapter()

The hooks run on a pipeline worker thread, never on the reactor: they may take milliseconds, but
not seconds — an answer slower than ``pipeline.timeout_seconds`` is answered AR with ERR 207 and
dropped. An exception is answered AE with ERR 207 and counted per plugin; neither stops the
gateway. With ``pipeline.isolation = "processes"`` the worker is a child process: every plugin is
loaded and ``hssk_configure`` called in each child, so a plugin keeps no state it expects the
gateway's process, or another child, to see; what a hook returns (records, issues, payloads) is
pickled back, so it holds plain data. Version notes: all hooks are as of 0.1;
:class:`PluginDescription` gained ``message_types`` and ``facilities`` after 0.1.0.

Call order, for each message or XML 130 file:

1. identify — :func:`hssk_identify` / :func:`hssk_identify_document`, the first claim wins;
2. normalize — the claiming adapter's ``normalize``;
3. check — :func:`hssk_check`: the built-in rule plugins first, ``core.identity`` (identifiers and
   codes, every record set), ``core.claims`` and ``core.totals`` (XML 130 episodes only), then the
   installed plugins' checks (:mod:`gateway.rules`). The built-ins are registered after every
   plugin and marked ``tryfirst``, so they run first even before a plugin's ``tryfirst`` check;
4. route — the config's routes pick the destinations;
5. privacy — per destination with ``privacy = "filtered"``, the privacy policy
   (:mod:`gateway.rules.privacy`) cuts the record set, or withholds it when it holds a part the
   policy does not know. It is a built-in step, not a hook: no plugin may replace or skip it;
6. render — :func:`hssk_render`, the first answer wins, the core's renderers (``core.render``) last.

Version note (issue 16): the national rules moved from the pipeline into the built-in plugins
``core.identity``, ``core.claims`` and ``core.totals``, which ``hssk-gateway plugins`` lists after
the installed ones and ``plugins.disabled`` cannot name; a plugin's ``hssk_check`` now runs after
them, as it ran after the pipeline's own checks before, and sees the same arguments.

Contract 1.0 added input kinds (:func:`hssk_sources`) and remote lookups (:func:`hssk_lookups`,
:func:`hssk_perform_lookup`, :func:`hssk_check_lookups`), which run on the reactor rather than
on a worker; and what a national system's plugin needs besides deciding messages:
:func:`hssk_ack_profile`, :func:`hssk_destination_kinds`, :func:`hssk_commands`,
:func:`hssk_migrations` and :func:`hssk_journal` (with it, events: outbox work no inbound
message caused).

Contract 1.1 (issue 17) added :func:`hssk_identity_linked`: the person index
(:mod:`gateway.rules.person_index`) tells the plugins of each identity link it made, so they can
send identity updates; and ``Event.destinations``.

Contract 1.2 (issue 18) added :func:`hssk_http_routes`: endpoints of a national system's own API
(the BHXH portal's) on the intake listener, so a HIS re-points to the gateway unchanged; and
:func:`hssk_gauges`, values of the gauges a plugin computes from the journal.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pluggy

from gateway.model.hooks import PROJECT

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from gateway.config import DestinationConfig, GatewayConfig
    from gateway.core.ack_profile import AckProfile
    from gateway.core.commands import Command
    from gateway.core.destination_kinds import DestinationKind
    from gateway.core.documents import DocumentSource
    from gateway.core.http_routes import HttpRoute
    from gateway.core.lookups import Lookup, LookupAnswer
    from gateway.core.plugin_gauges import GaugeValue
    from gateway.core.plugin_journal import MigrationSet, PluginJournal
    from gateway.core.sources import Source
    from gateway.formats.hl7v2 import Hl7Message
    from gateway.formats.xml130 import ClaimFile
    from gateway.model.envelope import Envelope
    from gateway.model.hooks import PluginDescription
    from gateway.model.outcome import Issue
    from gateway.model.records import RecordSet
    from gateway.rules.person_index import PersonLink

ENTRY_POINT_GROUP = "hssk_gateway.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)


class Adapter(Protocol):
    """What :func:`hssk_identify` returns: the object that owns one message from here on.

    ``name`` is used in the journal, in metrics labels and in ERR texts, so keep it short and
    stable (``viettel_his``). ``normalize`` returns the canonical records, or raises
    :class:`gateway.model.outcome.ContentError` with issues naming each bad field (the sender then
    gets AE with one ERR per issue).
    """

    name: str

    def normalize(self, message: Hl7Message) -> RecordSet: ...


class DocumentAdapter(Protocol):
    """What :func:`hssk_identify_document` returns: the owner of one XML 130 claim or check-in
    file. The core has already parsed the file safely into canonical records (one RecordSet per
    HOSO / MA_LK); ``normalize`` applies the vendor's profile (code systems, where it puts the
    CCCD or card) and returns the record sets to keep, or raises
    :class:`gateway.model.outcome.ContentError` naming each bad field (the sender gets 422 / a
    BHXH-style error code with one entry per issue).
    """

    name: str

    def normalize(self, document: ClaimFile) -> tuple[RecordSet, ...]: ...


@dataclass(frozen=True)
class Payload:
    """A rendered record set for one destination: bytes plus their media type."""

    content_type: str
    body: bytes


@hookspec
def hssk_configure(config: GatewayConfig) -> None:
    """Called once at start-up with the validated configuration, before any message.

    Read your own table with ``config.plugin_settings("my_plugin")``; raise
    :class:`gateway.config.ConfigError` with the dotted key to stop start-up on a bad setting::

        @hookimpl
        def hssk_configure(config):
            global SENDERS
            SENDERS = set(config.plugin_settings("my_lab").get("sending_applications", ["MY_LIS"]))
    """


@hookspec
def hssk_describe() -> PluginDescription:
    """Describe this plugin for operators (``hssk-gateway plugins``)::

        @hookimpl
        def hssk_describe():
            return PluginDescription("my_lab", "HL7 v2 ORU^R01 from MSH-3 MY_LIS")
    """


@hookspec(firstresult=True)
def hssk_identify(message: Hl7Message, envelope: Envelope) -> Adapter | None:
    """Return an :class:`Adapter` when this plugin owns ``message``, else None.

    The first non-None answer wins, so claim narrowly — by MSH-3 sending application, MSH-4
    facility or the authenticated ``envelope.facility`` — and never claim by message type alone.
    Only the MSH has been split at this point; reading it is cheap, and should be all you read.
    """


@hookspec(firstresult=True)
def hssk_identify_document(document: ClaimFile, envelope: Envelope) -> DocumentAdapter | None:
    """Return a :class:`DocumentAdapter` when this plugin owns an XML 130 file, else None.

    Claim by the facility code (``document.facility``, THONGTINDONVI/MACSKCB, or the
    authenticated ``envelope.facility``) listed in your plugin's config::

        @hookimpl
        def hssk_identify_document(document, envelope):
            if document.facility in FACILITIES:
                return VendorXmlAdapter()
    """


@hookspec
def hssk_check(message: Hl7Message | None, records: RecordSet) -> Iterable[Issue] | None:
    """Policy checks every accepted record set passes through, whichever plugin made it.

    ``message`` is the HL7 message, or None for a record set read from an XML 130 file (one call
    per HOSO), so check the records, not the message, unless you test for None first. The
    national rules are implementations of this hook too (``core.identity``, ``core.claims``,
    ``core.totals``: :mod:`gateway.rules`) and run before yours, so their issues come first in the
    answer; yours need not repeat them.

    Return issues (severity ``E`` makes the answer AE / HTTP 422, ``W``/``I`` ride along on an
    AA), or None. A text names the field and the rule, never the patient: mask an identifier
    you show with ``gateway.model.masking.mask_identifier`` and leave names out (operator views
    mask them again, but the ACK carries the text as written)::

        @hookimpl
        def hssk_check(message, records):
            if records.person and not records.person.identifier("CCCD"):
                return [Issue(101, "PID-3: no CCCD (type NI) repetition", "PID^1^3", "W")]

    Version note: ``message`` may be None since XML intake (0.1, issue 5).
    """


@hookspec(firstresult=True)
def hssk_render(records: RecordSet, destination: DestinationConfig, message: Hl7Message | DocumentSource,
                idempotency_key: str) -> Payload | None:
    """Render ``records`` in ``destination.format`` (``json``, ``xml130``, ``fhir`` …), or None
    when this plugin does not write that format. The first answer wins; the core's ``json``
    renderer runs last. Put ``idempotency_key`` inside the payload's own id so a receiver can
    deduplicate even without the HTTP header.

    Render from ``records``, never from ``message``'s segments: for a destination with
    ``privacy = "filtered"`` (the default), ``records`` is what the privacy policy left
    (:mod:`gateway.rules.privacy`), while ``message`` is still the message as received.

    For a record set read from an XML 130 file, ``message`` is a
    :class:`gateway.core.documents.DocumentSource`: it has ``sender`` (``XML|<MACSKCB>``),
    ``control_id`` (a hash of the file), ``message_type`` (``XML130`` or ``XML130^CHECKIN``) and
    ``sending_facility``, but no HL7 segments (version note: since XML intake, 0.1, issue 5).

    A record set your format has no place for is not the sender's error: raise
    :class:`NotRenderable` with a short reason and a text, and this destination does not get it
    while the sender's answer stays as the checks decided. Any other exception is your bug: the
    message is answered AE with ERR 207 and journaled for a replay (version note: before issue 15,
    the core's ``xml130`` renderer answered such a record set AE 101)::

        @hookimpl
        def hssk_render(records, destination, message, idempotency_key):
            if destination.format == "csv":
                if not records.person or not records.person.identifier("BHYT"):
                    raise NotRenderable("no_card", "a csv row is keyed by the BHYT card")
                return Payload("text/csv", f"{idempotency_key},{records.kind}\n".encode())
    """


@hookspec
def hssk_sources(config: GatewayConfig) -> Iterable[Source] | None:
    """Register input kinds: return the :class:`gateway.core.sources.Source` objects this plugin
    adds (a population list, an immunization export), or None.

    :param config: the validated configuration, so a source can close over its settings (the
        gateway's own take ``mllp.default_charset`` and ``http.max_body_bytes`` this way).
    :returns: sources, each with a ``name`` no other source has. Two with one name, or two on one
        HTTP ``route``, stop start-up naming both plugins.

    Called at start-up, after :func:`hssk_configure`, and again in each child process with
    ``pipeline.isolation = "processes"``: return new objects and change nothing. Not firstresult:
    every plugin's sources count. The gateway's own sources are built-in plugins of this hook
    (``core.hl7v2``, ``core.xml130``, see :mod:`gateway.sources`). A source with a ``route`` is
    mounted on the HTTP listener at ``POST /<route>`` and answered in JSON as ``/xml130`` is (in HL7
    ACKs when ``hl7`` is set); one with ``split`` can be fed from a file with ``hssk-gateway feed
    NAME FILE``, each record one journaled input named by its content, so feeding the same file
    again queues nothing twice. Its record sets then pass :func:`hssk_check` (with ``message``
    None unless it is an HL7 source) and :func:`hssk_render` (with the reading's origin as
    ``message``) as every other's do::

        def read_row(envelope, request):
            row = parse_row(envelope.raw)            # raise ContentError for a row that is no row
            origin = DocumentSource.named_by_content(envelope.raw, f"POP|{row.facility}", "POPULATION",
                                                     row.facility)
            return Reading(origin, row)

        @hookimpl
        def hssk_sources(config):
            return [Source("population_csv", read=read_row, identify=lambda hook, reading, envelope: ADAPTER,
                           split=rows_with_header, message_types=frozenset({"POPULATION"}))]

    Version note: added in contract 1.0 (issue 16); before it, HL7 v2 and XML 130 were the only
    input kinds, hard-coded in the pipeline.
    """


@hookspec
def hssk_lookups(records: RecordSet, envelope: Envelope) -> Iterable[Lookup] | None:
    """Ask for remote answers this record set needs before it can be checked (a BHYT card looked
    up at the BHXH portal), or None.

    :param records: one record set that passed the check step so far (no issue of severity ``E``).
    :param envelope: how the input came (client, facility), as in :func:`hssk_identify`.
    :returns: :class:`gateway.core.lookups.Lookup` objects; identical ones are asked once.

    Called on a pipeline worker after :func:`hssk_check`; not firstresult. When a lookup asked
    for has no answer yet, the worker does not wait: the decision stops here, the intake performs
    the lookups on the reactor (:func:`hssk_perform_lookup`), each bounded by its
    ``timeout_seconds`` and its service's ``max_concurrent``, and the input goes back to a worker,
    where the pipeline decides it again from the start with the answers: so return the same
    lookups for the same records. :func:`hssk_check_lookups` then judges them. The message's own
    deadline, ``pipeline.timeout_seconds``, still holds (AR 207 past it): keep lookup timeouts well
    under it. At most 16 lookups in 3 rounds per input; more is the plugin's bug (AE 207)::

        @hookimpl
        def hssk_lookups(records):
            card = records.person and records.person.identifier("BHYT")
            if card:
                return [Lookup("bhxh_card", card, timeout_seconds=3.0, max_concurrent=4)]

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec(firstresult=True)
def hssk_perform_lookup(lookup: Lookup, reactor) -> Deferred | None:
    """Perform ``lookup`` if it is one of this plugin's services, else None.

    :param lookup: as :func:`hssk_lookups` asked for it.
    :param reactor: the gateway's reactor, to make requests with (``twisted.web.client.Agent``).
    :returns: a Deferred that fires with the answer as plain data (it may be pickled to a child
        process), or fails; a cancellable one, so a timeout stops the request.

    Called on the reactor thread in the gateway's own process (never in a child process): never
    block here, return the Deferred at once. The first non-None answer wins. A failure, an
    exception or no answer within ``lookup.timeout_seconds`` becomes a
    :class:`gateway.core.lookups.LookupAnswer` saying so, never the message's fault, and is
    counted in ``hssk_lookups_total{service, outcome}``::

        @hookimpl
        def hssk_perform_lookup(lookup, reactor):
            if lookup.service == "bhxh_card":
                d = Agent(reactor).request(b"GET", f"{PORTAL}/the/{lookup.key}".encode())
                return d.addCallback(readBody).addCallback(json.loads)

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_check_lookups(records: RecordSet, answers: Mapping[Lookup, LookupAnswer]) -> Iterable[Issue] | None:
    """Judge the remote answers a record set asked for, as :func:`hssk_check` judges its records.

    :param records: the record set whose :func:`hssk_lookups` asked.
    :param answers: each lookup it asked for, answered: ``answer.outcome`` is ``answered`` (with
        ``answer.value``), ``failed``, ``timeout`` or ``not_performed`` (a replay run without the
        gateway, which cannot reach the service).
    :returns: issues (``E`` makes the answer AE, ``W``/``I`` ride along on an AA), or None. To
        answer AR instead, "cannot decide now, send again", raise
        :class:`gateway.model.outcome.Unavailable` with the issues.

    Called on a pipeline worker, once every lookup of the record set has its answer; not
    firstresult. What a timeout means is the plugin's choice, not the gateway's::

        @hookimpl
        def hssk_check_lookups(records, answers):
            for lookup, answer in answers.items():
                if lookup.service != "bhxh_card":
                    continue
                if not answer.answered:
                    return [Issue(0, f"BHYT card not checked at the BHXH portal ({answer.outcome})", "IN1^1^36", "W")]
                if not answer.value["valid"]:
                    return [Issue(103, "IN1-36: the BHXH portal knows no valid card by this number", "IN1^1^36")]

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_destination_kinds() -> Iterable[DestinationKind]:
    """Register destination kinds: what a ``[destinations.NAME]`` table's ``kind`` may name.

    :returns: :class:`~gateway.plugin.DestinationKind` objects, each with its ``name``, the
        frozen dataclass of its own keys (``settings``), the factory that builds its
        :class:`~gateway.plugin.Destination`, and optionally a ``check`` of rules across keys.

    Called once when the plugins are loaded (at start-up, in ``check-config``, in each pipeline
    child), before ``hssk_configure``; every plugin's kinds are collected (not firstresult), and
    two plugins registering one name stop start-up. Each destination's table is then checked
    against its kind: an unknown key, a missing required one, a wrong type or a rule broken is a
    configuration error naming ``destinations.NAME.key`` (exit status 2). The built-in ``http``,
    ``file``, ``mllp`` and ``batch`` come through this hook too (:mod:`gateway.destinations.builtin`).

    ``build(config, settings, context)`` runs once at start-up on the reactor and returns an
    object whose ``deliver(delivery)`` fires with a :class:`~gateway.plugin.DeliveryResult`
    (delivered, retry, dead) and never errbacks, and whose ``close()`` releases connections.
    Retries, backoff, per-person order and dead letters stay the gateway's::

        @dataclass(frozen=True)
        class SftpSettings:
            host: str = setting()                                 # required
            directory: str = "/incoming"

        class SftpDestination:
            def __init__(self, config, settings, context):
                self.name = config.name
                ...
            def deliver(self, delivery):
                ...  # upload delivery.payload as f"{delivery.idempotency_key}.json"
                return succeed(DeliveryResult(DELIVERED, "uploaded"))
            def close(self):
                return succeed(None)

        @hookimpl
        def hssk_destination_kinds():
            return [DestinationKind("sftp", SftpSettings, SftpDestination)]

    Version note: added in contract 1.0 (issue 16); before it the four kinds were built in.
    """


@hookspec(firstresult=True)
def hssk_ack_profile(message: Hl7Message, envelope: Envelope) -> AckProfile | None:
    """Choose the ACK profile of ``message``: extra ACK MSH fields, and which issue severities
    make its answer AE or AR. Return None to leave the ACK as HL7's base rules make it.

    :param message: the message being answered; only its MSH is sure to be read (a message whose
        body did not decode is answered too).
    :param envelope: how it arrived (transport, client, facility).
    :returns: an :class:`~gateway.plugin.AckProfile`, or None. The first non-None answer wins.

    Called on the pipeline worker (or child process) once the message is decided, for every
    decision that has an answer and a readable MSH — AA, AE and AR alike, the claiming plugin's
    or not — and before anything is journaled, so the code the profile gives is the one
    journaled, counted and repeated to a resend. Refusals made before deciding (a bound reached,
    the gateway stopping, a decision that timed out) carry no profile. An exception is AE with
    ERR 207 for the message, like any plugin fault. The CDC IIS guide's VXU ACK, for example::

        CDC_Z23 = AckProfile(msh_fields={21: "Z23^CDCPHINVS"}, severity_codes={"W": "AE"})

        @hookimpl
        def hssk_ack_profile(message, envelope):
            if message.message_code == "VXU":
                return CDC_Z23

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_commands() -> Iterable[Command]:
    """Add commands to the command line: each :class:`~gateway.plugin.Command` becomes
    ``hssk-gateway PLUGIN NAME …``, under this plugin's entry-point name, with ``--config`` and
    ``--data-dir`` like the gateway's own commands.

    :returns: the plugin's :class:`~gateway.plugin.Command` objects (name, help, ``run``, and
        optionally ``arguments`` to add argparse arguments).

    Called when the command line is built, before it is parsed, with each plugin loaded on its
    own: the plugin is not configured yet, so return the commands and do the work in ``run``.
    Not firstresult (each plugin says its own). A plugin that fails to load, or whose hook
    raises, loses its commands and is named in ``hssk-gateway --help``; nothing else is lost.
    ``run(args, context)`` gets the parsed arguments and a :class:`~gateway.plugin.CommandContext`:
    the configuration, with every plugin loaded and configured as ``serve`` would. A command of a
    plugin named in ``plugins.disabled`` is refused (exit 2)::

        def show_links(args, context):
            print(f"{args.limit} links of {context.plugin}")

        @hookimpl
        def hssk_commands():
            return [Command("links", "list the person links this plugin keeps", show_links,
                            arguments=lambda parser: parser.add_argument("--limit", type=int, default=20))]

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_migrations() -> Iterable[MigrationSet]:
    """Declare this plugin's own tables in the journal, as named, ordered schema steps.

    :returns: :class:`~gateway.plugin.MigrationSet` objects: a ``name`` (the plugin's; its
        tables are named ``NAME_…``) and ``steps``, ``(step name, function(db))`` where ``db`` is
        a ``sqlite_utils.Database`` on the journal.

    Called at start-up (``serve``; the CLI's replay and a plugin command's ``context.journal()``
    too), after the core's schema steps: each step not yet recorded for its set runs, in order,
    in a transaction of its own, and is recorded in ``_plugin_migrations``, so it never runs
    again; append steps, never edit one. Not firstresult; two sets of one name stop start-up.
    A step may create and change only its set's tables: touching another (``messages``,
    ``outbox``, another plugin's) is refused by SQLite, the step rolled back and start-up
    stopped naming it, as does any exception::

        def create_links(db):
            db["person_links_merges"].create({"retired": str, "surviving": str, "merged_at": float},
                                             pk="retired")

        @hookimpl
        def hssk_migrations():
            return [MigrationSet("person_links", [("0001_create_merges", create_links)])]

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_journal(journal: PluginJournal) -> None:
    """Receive the plugin's way into the journal, once it is ready: migrated, its writer running,
    before any message is taken. Keep it; it is the only safe path to the plugin's tables.

    :param journal: a :class:`~gateway.plugin.PluginJournal`. ``journal.read(query)`` runs
        ``query(connection)`` on a read-only connection of its own, on the calling thread.
        ``journal.write(task)`` runs ``task(connection, now)`` inside the journal writer's next
        group commit and returns a Deferred of its result; only the plugins' own tables may be
        changed, and a task that fails is rolled back alone. ``journal.queue_event(event)``
        journals an :class:`~gateway.plugin.Event` and queues its record set (see
        :mod:`gateway.core.events`); its Deferred fires with a :class:`~gateway.plugin.QueuedEvent`.
        ``write`` and ``queue_event`` are called on the reactor thread; a hook, which runs on a
        pipeline worker thread, calls them through ``journal.wait(journal.write, task)``, which
        returns the result.

    Called once in the gateway's process at start-up, and in each pipeline child process
    (``pipeline.isolation = "processes"``) with a journal that only reads (its writes fail:
    write from the gateway's process). Not firstresult: every plugin gets it. A plugin's command
    gets the same kind of object from ``context.journal()``::

        JOURNAL = None

        @hookimpl
        def hssk_journal(journal):
            global JOURNAL
            JOURNAL = journal

        @hookimpl
        def hssk_check(message, records):
            retired = JOURNAL.read(lambda conn: conn.execute(
                "SELECT surviving FROM person_links_merges WHERE retired = ?", (cccd_of(records),)).fetchone())
            ...

    Version note: added in contract 1.0 (issue 16).
    """


@hookspec
def hssk_identity_linked(link: PersonLink) -> Deferred | None:
    """The person index linked identities: a provisional person (a newborn registered under the
    mother's name) is named now by a record of its own, or two persons turned out to be one (an
    operator's review, a sender's ADT^A40). Queue what the record stores need to hear, or None.

    :param link: a :class:`~gateway.plugin.PersonLink`: the surviving ``person`` as the index knows
        it now (its identifiers, name, birth date, mother), the ``previous_identifiers`` the
        stores knew the provisional person by, ``how`` it was made (``automatic``, ``reviewed``,
        ``sender``), ``created_by`` (the plugin whose record set made the provisional person) and
        the ``destinations`` that had rows for the person before the link.
    :returns: a Deferred (``journal.queue_event(...)``) or None. When every plugin's answer has
        fired, the link is announced and never offered again; a failure leaves it to be offered
        again at the next refresh (``outbox.poll_interval_seconds``) and after a restart, so give
        the event a key made from ``link.id`` and it is queued once however often it is offered.

    Called on the reactor in the gateway's process (never in a pipeline child), after the commit
    that made the link, for links made by a replay or a review in the command line at the running
    gateway's next refresh. Not firstresult: each plugin judges whether a link is its own
    business (``link.created_by``). The identity update then goes where the person's rows went,
    in order behind them, through :attr:`Event.destinations <gateway.plugin.Event>`::

        @hookimpl
        def hssk_identity_linked(link):
            if link.created_by != "immunization" or not link.destinations:
                return None
            person = dataclasses.replace(link.person, previous_identifiers=link.previous_identifiers)
            return JOURNAL.queue_event(Event("immunization", f"link:{link.id}", "ADT^A40",
                                             RecordSet(kind="ADT^A40", person=person),
                                             destinations=link.destinations))

    Version note: added in contract 1.1 (issue 17).
    """


@hookspec
def hssk_http_routes(config: GatewayConfig) -> Iterable[HttpRoute] | None:
    """Add endpoints to the HTTP intake listener: a national system's own API that a HIS already
    calls (the BHXH portal's ``/api/token/take`` and ``/api/qd130/...``), so the HIS sends to the
    gateway by changing only the address. Return :class:`~gateway.plugin.HttpRoute` objects, or None.

    :param config: the validated configuration (the plugin's accounts, token lifetime).
    :returns: routes, each a path and ``handle(call)``, which gets an
        :class:`~gateway.plugin.HttpCall` and returns an :class:`~gateway.plugin.HttpAnswer` (or a
        Deferred of one). ``call.submit(raw, source=..., client=..., request=...)`` hands a file
        to the normal intake as a configured ``[clients.NAME]`` (journal, duplicate answers, the
        client's facilities, routing) and fires with the Outcome after the commit;
        ``call.form()`` reads a form body on a thread; ``call.credentials_failed()`` counts a
        wrong password against the peer, as the gateway's own endpoints count wrong tokens.

    Called once at start-up in the gateway's process, after :func:`hssk_configure`; ``handle``
    runs on the reactor, so it must not block (parse big bodies with ``call.form`` or on a
    thread). Not firstresult. A route may sit under ``/api`` and then takes the place of the
    gateway's built-in portal pair at the same path; a path another plugin or a source's route
    takes, or one under ``/healthz``, ``/readyz``, ``/metrics`` or ``/admin``, stops start-up. An
    exception in ``handle`` is logged and answered 500, and costs nothing else::

        def take_token(call):
            return HttpAnswer.json({"maKetQua": "200", "APIKey": {...}})

        @hookimpl
        def hssk_http_routes(config):
            return [HttpRoute("api/token/take", take_token)]

    Version note: added in contract 1.2 (issue 18).
    """


@hookspec
def hssk_gauges(journal: PluginJournal) -> Iterable[GaugeValue] | None:
    """Report the current values of gauges the gateway defines for plugins
    (``Metrics.plugin_gauges``: ``hssk_bhxh_reconcile_episodes`` …), computed from the journal.

    :param journal: the plugins' :class:`~gateway.plugin.PluginJournal`; read with ``journal.read``.
    :returns: :class:`~gateway.plugin.GaugeValue` objects (gauge name, value, labels), or None. Each
        refresh replaces every series of the gauges reported, so report all of a gauge's series
        each time.

    Called every ``plugins.gauges_seconds`` (and at start-up) in the gateway's process, on a thread
    of the reactor's pool, never on the reactor: a read may take a while, but not longer than the
    interval. Not firstresult. An exception, an unknown gauge name or wrong labels are logged and
    skip the round (the gauges keep their last values)::

        @hookimpl
        def hssk_gauges(journal):
            waiting = journal.read(lambda conn: conn.execute("SELECT count(*) FROM my_reviews").fetchone()[0])
            return [GaugeValue("hssk_my_reviews_waiting", waiting)]

    Version note: added in contract 1.2 (issue 18).
    """
