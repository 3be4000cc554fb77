"""Telling the plugins of identity links, and the person index's gauges.

The person index links persons in the journal writer's transaction (:mod:`gateway.rules.person_index`):
a provisional newborn named at last, an operator's reviewed merge, a sender's ADT^A40. Each link
is a row that stays *unannounced* until every plugin's ``hssk_identity_linked`` answer has fired
(the plugins queue their identity updates as events there). :class:`IdentityUpdates` offers the
unannounced links right after a commit that made one (``JournalWriter.on_linked``), at every
refresh (``outbox.poll_interval_seconds``: links made by the command line's replay or review) and
at start-up (links a crash left unannounced). A plugin whose answer fails is offered the link
again at the next refresh; its event's key makes a second offer queue nothing twice.

The same refresh reads the index's counts for the metrics: open provisional persons and the age
of the oldest, links by how they were made, reviews waiting. Reads run in the thread pool on
connections of their own; writes (marking links announced) go through the journal writer.
"""
from __future__ import annotations

from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.model.masking import mask_text
from gateway.core.metrics import Metrics
from gateway.core.store import JournalWriter, Store
from gateway.rules.person_index import IndexCounts, PersonLink, index_counts, mark_announced, pending_links

log = Logger(namespace="hssk.persons")


class IdentityUpdates:
    """Offers unannounced identity links to the plugins and keeps the index's gauges current."""

    def __init__(self, hook, store: Store, writer: JournalWriter, reactor, clock, metrics: Metrics,
                 interval: float) -> None:
        self._hook = hook
        self._store = store
        self._writer = writer
        self._reactor = reactor
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        #: Links counted so far, per how: the counter goes up by what the journal adds.
        self._links_seen: dict[str, int] = {}
        self._running = None
        self._again = False
        self._stopped = False

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    def stop(self):
        """No round starts from now on; fires when the one under way, if any, has ended."""
        self._stopped = True
        if self._loop.running:
            self._loop.stop()
        return self._running

    def links_committed(self) -> None:
        """A commit made links: offer them now (or as soon as the round under way ends)."""
        self.refresh()

    def refresh(self):
        """One round: counts and unannounced links read, gauges set, links offered. Rounds never
        overlap; a request during one runs another after it."""
        if self._stopped:
            return None
        if self._running is not None:
            self._again = True
            return self._running
        self._running = self._round()
        self._running.addBoth(self._ended)
        return self._running

    def _ended(self, result):
        self._running = None
        if self._again and not self._stopped:
            self._again = False
            self.refresh()
        return None

    @inlineCallbacks
    def _round(self):
        try:
            counts, links = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._read,
                                                    self._clock.seconds())
        except Exception as e:  # a journal that cannot be read now is read again at the next refresh
            log.warn("reading the person index failed: {error}", error=str(e))
            return
        self._count(counts)
        for link in links:
            yield self._offer(link)

    def _read(self, now: float) -> tuple[IndexCounts, list[PersonLink]]:
        conn = self._store.connect()
        try:
            return index_counts(conn, now), pending_links(conn)
        finally:
            conn.close()

    def _count(self, counts: IndexCounts) -> None:
        self._metrics.provisional_persons.set(counts.provisional)
        self._metrics.provisional_oldest_age.set(counts.oldest_provisional_age)
        self._metrics.identity_reviews_waiting.set(counts.reviews_waiting)
        for how, total in counts.links.items():
            added = total - self._links_seen.get(how, 0)
            if added > 0:
                self._metrics.identity_links.labels(how=how).inc(added)
            self._links_seen[how] = total

    @inlineCallbacks
    def _offer(self, link: PersonLink):
        try:
            answers = [a for a in self._hook.hssk_identity_linked(link=link) if a is not None]
            yield gatherResults([maybeDeferred(lambda a=a: a) for a in answers], consumeErrors=True)
        except Exception as e:  # a plugin's failure leaves the link to be offered again
            log.warn("a plugin failed on identity link {link} ({how} {kind}); it is offered again at the next "
                     "refresh: {error}", link=link.id, how=link.how, kind=link.kind, error=mask_text(_first_error(e)))
            return
        try:
            yield self._writer.run(lambda conn, now: mark_announced(conn, now, [link.id]))
        except Exception as e:  # the journal failed: the link is offered again, its update queued once
            log.warn("identity link {link} could not be marked announced: {error}", link=link.id, error=str(e))
            return
        self._metrics.identity_updates.labels(how=link.how).inc()


def _first_error(error: Exception) -> str:
    """The text of what failed, the first failure of a gathered list."""
    failure = getattr(error, "subFailure", None)
    return failure.getErrorMessage() if failure is not None else f"{type(error).__name__}: {error}"
