"""Dead letters and replay of errors: the dead outbox rows (``GET /admin/outbox/rows?state=dead``)
each with its retry (``POST /admin/outbox/rows/ID/retry``), and the messages answered with an
error or a refusal in a time range decided again (``POST /admin/messages/replay``)."""
from __future__ import annotations

from gateway.transports.admin import AdminError
from gateway.transports.console.markup import Markup, join, table, tag
from gateway.transports.console.messages import message_link, replay_note
from gateway.transports.console.page import BASE, Page, Redirect, Shown, hidden, when

PATH = "dead-letters"
LIMIT = 200


async def show(page: Page) -> Shown:
    found = await page.ask("GET", "outbox/rows", state="dead", limit=LIMIT)
    rows = [[r["id"], message_link(r["message_id"]), r["destination"], r["attempts"], r["last_result"] or "-",
             r["last_error"] or "-", when(r["updated_at"]),
             page.button(f"outbox/rows/{r['id']}/retry", page.t("retry"), PATH)] for r in found["rows"]]
    dead = (table([page.t(h) for h in ("row", "message", "destination", "tries", "last_result", "last_error",
                                       "updated", "action")], rows, id="dead")
            if rows else tag("p", page.t("no_dead_letters"), id="dead"))
    return Shown(page.t("dead_letters"), join(dead, tag("h2", page.t("replay_errors")), _replay_form(page)))


def _replay_form(page: Page) -> Markup:
    options = [tag("option", page.t("status_" + s), value=s) for s in ("error", "rejected")]
    return tag("form", hidden("csrf", page.session.csrf), hidden("back", PATH),
               tag("p", page.t("replay_errors_intro")),
               tag("div", tag("label", page.t("status"), tag("select", options, name="status")),
                   tag("label", page.t("since"), tag("input", type="datetime-local", name="since", required=True,
                                                     step="1")),
                   tag("label", page.t("until"), tag("input", type="datetime-local", name="until", step="1")),
                   class_="fields"),
               tag("button", page.t("replay"), type="submit"),
               method="post", action=BASE + "replay", id="replay-errors")


async def retry(page: Page, form: dict[str, str], row_id: str) -> Redirect:
    answer = await page.ask("POST", f"outbox/rows/{row_id}/retry")
    page.flash("ok", page.t("retried_done", row=answer["row"]))
    return Redirect(form.get("back") or PATH)


async def replay_errors(page: Page, form: dict[str, str]) -> Shown | Redirect:
    try:
        answer = await page.ask("POST", "messages/replay", status=form.get("status", "error"),
                                since=form.get("since", ""), until=form.get("until", ""))
    except AdminError as e:
        page.flash("error", e.message)
        return Redirect(PATH)
    entries = answer["replayed"]
    rows = [[message_link(r["id"]), r["control_id"] or "-", r["was"] or "-", r["ack_code"] or "-",
             message_link(r["message_id"]) if r["message_id"] else "-", r["queued"], replay_note(page, r)]
            for r in entries]
    body = join(tag("p", page.t("replayed_count", count=len(entries)) + (" " + page.t("more") if answer["more"]
                                                                          else "")),
                table([page.t(h) for h in ("message", "control_id", "was", "now", "new_message", "queued", "note")],
                      rows, id="replayed"))
    return Shown(page.t("replay_errors"), body)
