"""The ``bhxh`` destination kind: each claim file goes to the BHXH receiving portal, signed.

For one outbox row (an XML 130 file the core rendered, ``format = "xml130"``) it:

1. signs CHUKYDONVI with the facility's certificate (:mod:`plugins.bhxh.signing`);
2. refuses up front a file over the size limit for the time of day (20 MB in the portal's peak
   hours, 100 MB otherwise): a retry after the window, or a dead letter when over 100 MB;
3. takes a token (cached, a new login on 401, :mod:`plugins.bhxh.portal_client`);
4. sends the check-in file built from the claim (:mod:`plugins.bhxh.checkin`) to
   ``checkInKcbQd<standard>``, unless the row is an emergency or its check-in was already taken;
5. sends the claim to ``guiHoSoXmlQD<standard>`` and maps the portal's ``maKetQua``.

==================================================  ==========================================
200                                                 delivered; maGiaoDich kept on the row
124 save error, 500, HTTP 5xx, 408, 429, no          retry (the gateway's backoff)
answer or too slow
401 / 403 after a new login, a refused login          retry (an operator fixes the account)
1001 in peak hours                                  retry after the peak window ends
1001 outside them, over 100 MB                      dead letter
123 file format, 205 parameters, 701 outside the     dead letter, the portal's thongDiep as the
window, any other HTTP 4xx                          reason
any other maKetQua                                  retry (until max_attempts)
==================================================  ==========================================

Labels of ``hssk_delivery_attempts_total{result}`` are ``bhxh_<maKetQua>`` for the codes above
(``bhxh_other`` for the rest), ``5xx`` / ``4xx``, ``timeout`` / ``connection``, ``too_big`` and
``login``, so they stay a bounded set.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from lxml import etree
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThreadPool

from gateway.plugin import (DEAD, DELIVERED, RETRY, ConfigError, Delivery, DeliveryResult, DestinationConfig,
                            DestinationContext, DestinationKind, NotRenderable, RecordSet, setting)
from plugins.bhxh.checkin import check_in_file
from plugins.bhxh.portal import CHECK_IN, CLAIM, ROOTS, STANDARDS, peak_window_end
from plugins.bhxh.portal_client import PortalAnswer, PortalClient, PortalError
from plugins.bhxh.signing import FacilityCertificate, SigningError, sign_file

MiB = 1024 * 1024
KIND = "bhxh"
RETRIED_CODES = frozenset({"124", "500", "401", "403"})
DEAD_CODES = frozenset({"123", "205", "701"})
KNOWN_CODES = RETRIED_CODES | DEAD_CODES | {"200", "1001"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


@dataclass(frozen=True)
class BhxhSettings:
    """The keys of a ``bhxh`` destination's table: one facility's account on the portal."""

    #: The portal's base URL: https://egw.baohiemxahoi.gov.vn (training: daotaoegw).
    url: str = setting()
    #: The facility account (``xxxxx_BV``) and the environment variable holding its password.
    username: str = setting()
    password_env: str = setting()
    #: The facility code (MACSKCB, 5 characters) and its province (maTinh, 2 digits).
    ma_cskcb: str = setting(rule="must be the 5-character facility code", test=lambda v: len(v) == 5)
    ma_tinh: str = setting(rule="must be the 2-digit province code", test=lambda v: len(v) == 2 and v.isdigit())
    #: The facility's certificate and key (PKCS#12), its password in an environment variable.
    pkcs12_file: str = setting()
    pkcs12_password_env: str = ""
    #: Which endpoints: guiHoSoXmlQD4750 (the default) or guiHoSoXmlQD3176, or 130.
    standard: str = setting("4750", rule=f"must be one of {', '.join(STANDARDS)}", test=lambda v: v in STANDARDS)
    #: Send the check-in file (XML0) before each claim.
    check_in: bool = True
    peak_limit_bytes: int = setting(20 * MiB, rule="must be a positive integer", test=lambda v: v > 0)
    limit_bytes: int = setting(100 * MiB, rule="must be a positive integer", test=lambda v: v > 0)
    connect_timeout_seconds: float = setting(10.0, rule="must be a positive number", test=lambda v: v > 0)
    response_timeout_seconds: float = setting(120.0, rule="must be a positive number", test=lambda v: v > 0)


def check_bhxh(destination: DestinationConfig, settings: BhxhSettings) -> None:
    """Rules across keys, and what cannot wait for the first delivery: the portal takes XML 130
    files, the password is in the environment, the certificate opens."""
    if destination.format != "xml130":
        raise ConfigError(destination.key("format"), f'must be "xml130" for a bhxh destination (the portal takes '
                                                     f'XML 130 files), got {destination.format!r}')
    url = urlsplit(settings.url)
    if url.scheme not in ("http", "https") or not url.hostname or url.username or url.password:
        raise ConfigError(destination.key("url"), f"must be the portal's http(s) base URL without credentials, "
                                                  f"got {settings.url!r}")
    if not os.environ.get(settings.password_env):
        raise ConfigError(destination.key("password_env"), f"names ${settings.password_env}, which is not set: it "
                                                           f"must hold the portal account's password")
    try:
        FacilityCertificate.from_pkcs12(settings.pkcs12_file, settings.pkcs12_password_env)
    except SigningError as e:
        raise ConfigError(destination.key("pkcs12_file"), str(e)) from None


def build_bhxh(destination: DestinationConfig, settings: BhxhSettings, context: DestinationContext) -> BhxhDestination:
    return BhxhDestination(destination.name, settings, context)


def other_facility(records: RecordSet, destination: DestinationConfig) -> None:
    """A ``bhxh`` destination sends one facility's files with that facility's account: another
    facility's record set is not its to send (a destination per facility, each with its own
    ``ma_cskcb``)."""
    if destination.kind != KIND:
        return
    own = str(destination.options.get("ma_cskcb", ""))
    facility = records.encounter.facility if records.encounter is not None else ""
    if facility and facility != own:
        raise NotRenderable("other_facility", f"this bhxh destination sends the files of facility {own}, and this "
                                              f"record set is facility {facility}'s")


def size_verdict(size: int, now: float, settings: BhxhSettings) -> DeliveryResult | None:
    """A file the portal would refuse as too big (1001) at ``now``: retry after the peak window,
    or dead when over the limit at any hour; None when it may go."""
    if size > settings.limit_bytes:
        return DeliveryResult(DEAD, "too_big", f"the signed file is {size} bytes, over the portal's limit of "
                                               f"{settings.limit_bytes} bytes at any hour")
    window_end = peak_window_end(datetime.fromtimestamp(now, timezone.utc))
    if size > settings.peak_limit_bytes and window_end is not None:
        return DeliveryResult(RETRY, "too_big", f"the signed file is {size} bytes, over the portal's peak-hour "
                                                f"limit of {settings.peak_limit_bytes} bytes; sent after "
                                                f"{window_end:%H:%M} Vietnam time",
                              retry_after=window_end.timestamp() - now)
    return None


def classify(kind: str, answer: PortalAnswer, now: float, detail: dict) -> DeliveryResult:
    """The outbox's verdict on the portal's answer to one file (see the module's table). The
    answer's maKetQua, maGiaoDich and thoiGianTiepNhan join ``detail`` as the row's
    ``last_detail`` whatever the verdict, so a refused file can be found on the portal too."""
    code = answer.code
    what = "check-in" if kind == CHECK_IN else "claim"
    reason = f"portal answered {what} with {code or f'HTTP {answer.http_status}'}: {answer.message}".strip()
    label = f"bhxh_{code}" if code in KNOWN_CODES else ("bhxh_other" if code else f"{answer.http_status // 100}xx")
    recorded = {key: value for key, value in {**detail, "maKetQua": code, "maGiaoDich": answer.ma_giao_dich,
                                               "thoiGianTiepNhan": answer.received_at}.items() if value}
    text = json.dumps(recorded, separators=(",", ":")) if recorded else ""
    window_end = peak_window_end(datetime.fromtimestamp(now, timezone.utc))
    retry_after = None
    if code == "200":
        outcome, reason = DELIVERED, ""
    elif code == "1001":
        outcome = RETRY if window_end is not None else DEAD
        retry_after = window_end.timestamp() - now if window_end is not None else None
    elif code in DEAD_CODES:
        outcome = DEAD
    elif code or answer.http_status >= 500 or answer.http_status in (401, 408, 429):
        outcome = RETRY
    else:
        outcome = DEAD
    return DeliveryResult(outcome, label, reason, retry_after, text)


class BhxhDestination:
    """One facility's claims to the portal, one outbox row (one claim file) at a time."""

    def __init__(self, name: str, settings: BhxhSettings, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self._reactor = context.reactor
        self._clock = context.clock
        self._certificate = FacilityCertificate.from_pkcs12(settings.pkcs12_file, settings.pkcs12_password_env)
        self.client = PortalClient(settings.url, settings.username, os.environ.get(settings.password_env, ""),
                                   settings.ma_tinh, settings.standard, context.reactor, context.clock,
                                   settings.connect_timeout_seconds, settings.response_timeout_seconds)
        #: Rows whose check-in the portal took (maGiaoDich by idempotency key), so a retried
        #: claim does not check in again; forgotten once the row is finished.
        self._checked_in: dict[str, str] = {}

    def _prepare(self, payload: bytes) -> tuple[str, bytes, bytes | None]:
        """In a worker thread (parsing and signing a file of megabytes): the kind of file, the
        signed file, and the signed check-in file for a claim that needs one."""
        root = etree.fromstring(payload, _PARSER)
        kind = next((k for k, tag in ROOTS.items() if root.tag == tag), None)
        if kind is None:
            raise SigningError(f"the row is a {root.tag} file, and the portal takes {' or '.join(ROOTS.values())}")
        check_in = check_in_file(payload) if kind == CLAIM and self.settings.check_in else None
        return (kind, sign_file(payload, self._certificate),
                sign_file(check_in, self._certificate) if check_in is not None else None)

    def deliver(self, delivery: Delivery):
        return self._deliver(delivery).addErrback(self._failed)

    @inlineCallbacks
    def _deliver(self, delivery: Delivery):
        kind, signed, check_in = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._prepare,
                                                         delivery.payload)
        too_big = size_verdict(len(signed), self._clock.seconds(), self.settings)
        if too_big is not None:
            return too_big
        key = delivery.idempotency_key
        detail: dict[str, str] = {}
        if check_in is not None and key not in self._checked_in:
            answer = yield self.client.send(CHECK_IN, self.settings.ma_cskcb, base64.b64encode(check_in).decode())
            if answer.code != "200":
                return self._finished(key, classify(CHECK_IN, answer, self._clock.seconds(), detail))
            self._checked_in[key] = answer.ma_giao_dich
        if key in self._checked_in:
            detail["checkInMaGiaoDich"] = self._checked_in[key]
        answer = yield self.client.send(kind, self.settings.ma_cskcb, base64.b64encode(signed).decode())
        return self._finished(key, classify(kind, answer, self._clock.seconds(), detail))

    def _finished(self, key: str, result: DeliveryResult) -> DeliveryResult:
        if result.outcome != RETRY:
            self._checked_in.pop(key, None)
        return result

    def _failed(self, failure) -> DeliveryResult:
        """A destination answers with a result; the dispatcher must not see errbacks."""
        if failure.check(PortalError):
            return DeliveryResult(RETRY, "connection", f"no answer from the portal: {failure.value}")
        if failure.check(SigningError, etree.XMLSyntaxError):
            return DeliveryResult(DEAD, "unsigned", f"cannot sign the file: {failure.value}")
        return failure

    def close(self):
        return self.client.close()


KINDS = (DestinationKind(KIND, BhxhSettings, build_bhxh, check_bhxh),)
