"""Coverage of the electronic health record programme by district: residents against those of
them with a clinical record.

**Residents** are the persons whose residence a population list gave (``person_residence``,
written by a list import such as ``hssk-gateway bhxh import``), by province and district. A
resident **has a clinical record** in a period when a record set about them, from a sender (an HL7
v2 message, an XML 130 file, a plugin source's input such as an immunization list row; not a
plugin's event nor a population list itself), was accepted in that period. The journal ties a
record set to its person through the outbox: each queued row's ordering key is the person's id in
the index (:mod:`gateway.rules.person_index`), so the question is one join of the outbox, the
journal and the residences. Two consequences, said in the README: a record routed to no
destination ties to nobody, and delivered rows pruned after ``outbox.retention_days`` no longer
count, so a period older than that is counted low.

The programme's targets are QĐ 5349/QĐ-BYT (2019): a health record for 80 % of the population by
2020 and 95 % by 2025.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

#: (year, share of residents) the programme set (QĐ 5349/QĐ-BYT).
TARGETS = ((2020, 80.0), (2025, 95.0))

_COVERAGE = """
WITH residents AS (
    SELECT DISTINCT coalesce(p.replaced_by, r.person_id) AS person, r.province, r.district
    FROM person_residence r JOIN persons p ON p.id = r.person_id
), clinical AS (
    SELECT DISTINCT o.ordering_key AS person FROM messages m JOIN outbox o ON o.message_id = m.id
    WHERE m.received_at >= :start AND m.received_at < :end AND m.status = 'accepted'
      AND m.transport NOT IN ('event', 'import')
)
SELECT coalesce(r.province, ''), coalesce(r.district, ''), count(*), count(c.person)
FROM residents r LEFT JOIN clinical c ON c.person = r.person
GROUP BY r.province, r.district ORDER BY r.province, r.district
"""


@dataclass(frozen=True)
class DistrictCoverage:
    """One district: its residents, those of them with a clinical record in the period, the share."""

    province: str
    district: str
    residents: int
    with_records: int

    @property
    def percent(self) -> float:
        return round(100.0 * self.with_records / self.residents, 1) if self.residents else 0.0

    def meets(self, target: float) -> bool:
        return self.residents > 0 and 100.0 * self.with_records >= target * self.residents


def coverage(conn: sqlite3.Connection, start: float, end: float) -> list[DistrictCoverage]:
    """Each district's coverage for records received in [start, end) (Unix times), by province
    and district code."""
    return [DistrictCoverage(*row) for row in conn.execute(_COVERAGE, {"start": start, "end": end})]


def total(districts: list[DistrictCoverage]) -> DistrictCoverage:
    """All districts together."""
    return DistrictCoverage("", "", sum(d.residents for d in districts), sum(d.with_records for d in districts))
