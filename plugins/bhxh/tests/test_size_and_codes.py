"""The portal's size limit by time of day, refused before sending, and maKetQua → outbox verdict."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.plugin import DEAD, DELIVERED, RETRY
from plugins.bhxh.portal_client import PortalAnswer
from plugins.bhxh.submit import BhxhSettings, classify, size_verdict

SETTINGS = BhxhSettings(url="http://127.0.0.1:1", username="92001_BV", password_env="X", ma_cskcb="92001",
                        ma_tinh="92", pkcs12_file="f.p12", peak_limit_bytes=20, limit_bytes=100)


def at(text: str) -> float:
    """A moment given in Vietnam time (UTC+7)."""
    return datetime.fromisoformat(text + "+07:00").astimezone(timezone.utc).timestamp()


@pytest.mark.parametrize("moment,size,outcome,retry_after", [
    ("2026-12-03T09:30", 21, RETRY, 5400.0),      # Thursday morning peak: after 11:00
    ("2026-12-03T18:59", 21, RETRY, 60.0),        # evening peak: after 19:00
    ("2026-12-03T12:00", 21, None, None),         # lunch: 100 MB
    ("2026-12-05T09:30", 21, None, None),         # Saturday: 100 MB all day
    ("2026-12-03T09:30", 20, None, None),         # at the limit
    ("2026-12-03T12:00", 101, DEAD, None),        # over 100 MB at any hour
])
def test_a_file_over_the_limit_for_the_time_of_day_is_refused_before_sending(moment, size, outcome, retry_after):
    verdict = size_verdict(size, at(moment), SETTINGS)

    assert (verdict.outcome if verdict else None, verdict.retry_after if verdict else None) == (outcome, retry_after)


@pytest.mark.parametrize("answer,outcome,label", [
    (PortalAnswer(200, "200", "G1"), DELIVERED, "bhxh_200"),
    (PortalAnswer(200, "124"), RETRY, "bhxh_124"),
    (PortalAnswer(200, "500"), RETRY, "bhxh_500"),
    (PortalAnswer(503), RETRY, "5xx"),
    (PortalAnswer(401, "401"), RETRY, "bhxh_401"),
    (PortalAnswer(200, "123", message="Sai định dạng"), DEAD, "bhxh_123"),
    (PortalAnswer(200, "205"), DEAD, "bhxh_205"),
    (PortalAnswer(200, "701"), DEAD, "bhxh_701"),
    (PortalAnswer(404), DEAD, "4xx"),
    (PortalAnswer(200, "999"), RETRY, "bhxh_other"),
])
def test_each_portal_answer_has_its_verdict(answer, outcome, label):
    result = classify("claim", answer, at("2026-12-03T12:00"), {"maGiaoDich": answer.ma_giao_dich})

    assert (result.outcome, result.label) == (outcome, label)


def test_too_big_1001_is_retried_after_the_peak_window_and_dead_outside_it():
    peak = classify("claim", PortalAnswer(200, "1001"), at("2026-12-03T10:00"), {})
    quiet = classify("claim", PortalAnswer(200, "1001"), at("2026-12-03T22:00"), {})

    assert (peak.outcome, peak.retry_after, quiet.outcome) == (RETRY, 3600.0, DEAD)
