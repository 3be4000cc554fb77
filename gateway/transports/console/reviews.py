"""The identity review queue (what ``identity review list|accept|reject`` shows and decides):
``GET /admin/identity/reviews`` with names masked, and ``POST .../accept`` (with the candidate
chosen) or ``.../reject``."""
from __future__ import annotations

from gateway.transports.console.markup import Markup, join, table, tag
from gateway.transports.console.page import Page, Redirect, Shown, when

PATH = "reviews"


async def show(page: Page) -> Shown:
    found = await page.ask("GET", "identity/reviews")
    if not found["reviews"]:
        return Shown(page.t("reviews"), tag("p", page.t("no_reviews"), id="reviews"))
    return Shown(page.t("reviews"), tag("div", [_review(page, r) for r in found["reviews"]], id="reviews"))


def _review(page: Page, review: dict) -> Markup:
    subject = review["subject"]
    several = len(review["candidates"]) > 1
    choices = [tag("label", tag("input", type="radio", name="candidate", value=c["id"], required=True,
                                checked=not several), c["id"], class_="choice") for c in review["candidates"]]
    people = table([page.t(h) for h in ("role", "person_id", "name", "birth_date", "person_status")],
                   [[page.t("subject"), subject["id"], subject["name"] or "-", subject["birth_date"] or "-",
                     page.t("person_" + subject["status"])]]
                   + [[page.t("candidate"), c["id"], c["name"] or "-", c["birth_date"] or "-",
                       page.t("person_" + c["status"])] for c in review["candidates"]])
    note = tag("label", page.t("note"), tag("input", type="text", name="note"))
    reason = page.words.get("reason_" + review["reason"], review["reason"])
    return tag("section", tag("h2", page.t("review_n", id=review["id"], reason=reason)),
               tag("p", page.t("opened", when=when(review["created_at"]))), people,
               page.button(f"{PATH}/{review['id']}/accept", page.t("accept"), PATH, join(*choices), note),
               page.button(f"{PATH}/{review['id']}/reject", page.t("reject"), PATH, note, danger=True),
               class_="review", id=f"review-{review['id']}")


async def accept(page: Page, form: dict[str, str], review_id: str) -> Redirect:
    answer = await page.ask("POST", f"identity/reviews/{review_id}/accept", candidate=form.get("candidate", ""),
                            note=form.get("note", ""))
    page.flash("ok", page.t("accepted_done", id=answer["review"], chosen=answer["chosen"]))
    return Redirect(PATH)


async def reject(page: Page, form: dict[str, str], review_id: str) -> Redirect:
    answer = await page.ask("POST", f"identity/reviews/{review_id}/reject", note=form.get("note", ""))
    page.flash("ok", page.t("rejected_done", id=answer["review"]))
    return Redirect(PATH)
