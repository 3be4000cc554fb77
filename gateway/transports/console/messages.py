"""Message search and one message: ``GET /admin/messages`` (identifiers masked in the list), and
``GET /admin/messages/ID`` — the decision, its ACK code and ERR texts, the attempts, the outbox
rows. The body is read only on the explicit "show body" button (``GET /admin/messages/ID/body``,
the one unmasked answer), never on a plain page view, so every read of it is an action someone
took. Replay is ``POST /admin/messages/ID/replay``."""
from __future__ import annotations

import json

from gateway.model.outcome import MESSAGE_STATUSES
from gateway.transports.admin import AdminError
from gateway.transports.console.markup import Markup, join, table, tag
from gateway.transports.console.page import BASE, Page, Redirect, Shown, link, segment, when

PATH = "messages"
#: Messages a search lists at most, newest first.
LIMIT = 200
#: The search form's fields: (parameter, catalogue key, input type).
FIELDS = (("control_id", "control_id", "text"), ("facility", "facility", "text"), ("sender", "sender", "text"),
          ("type", "message_type", "text"), ("since", "since", "datetime-local"),
          ("until", "until", "datetime-local"), ("person", "person", "text"))


async def search(page: Page, query: dict[str, str]) -> Shown:
    wanted = {name: query.get(name, "") for name, _, _ in FIELDS} | {"status": query.get("status", "")}
    results: Markup = Markup("")
    code = 200
    if any(wanted.values()):
        try:
            found = await page.ask("GET", "messages", limit=LIMIT, **wanted)
        except AdminError as e:
            results, code = tag("p", e.message, class_="error"), e.code
        else:
            results = _listing(page, found["messages"])
            if len(found["messages"]) == LIMIT:
                results = join(tag("p", page.t("newest_only", count=LIMIT), class_="note"), results)
    return Shown(page.t("messages"), join(_form(page, wanted), results), code)


def _form(page: Page, wanted: dict[str, str]) -> Markup:
    inputs = [tag("label", page.t(key), tag("input", type=kind, name=name, value=wanted[name], step="1" if
                                            kind == "datetime-local" else None)) for name, key, kind in FIELDS]
    options = [tag("option", page.t("any"), value="")] + [
        tag("option", page.t("status_" + s), value=s, selected=wanted["status"] == s) for s in MESSAGE_STATUSES]
    inputs.insert(3, tag("label", page.t("status"), tag("select", options, name="status")))
    return tag("form", tag("div", inputs, class_="fields"), tag("button", page.t("search"), type="submit"),
               method="get", action=BASE + PATH, id="search")


def _listing(page: Page, messages: list[dict]) -> Markup:
    if not messages:
        return tag("p", page.t("no_messages"), id="results")
    rows = [[link(f"{PATH}/{m['id']}", m["id"]), when(m["received_at"]), m["sender"] or "-", m["control_id"] or "-",
             m["message_type"] or "-", m["ack_code"] or "-", page.t("status_" + m["status"]), _errors_line(m["errors"])]
            for m in messages]
    return table([page.t(h) for h in ("id", "received", "sender", "control_id", "message_type", "ack", "status",
                                      "errors")], rows, id="results")


def _errors_line(errors: str | None) -> str:
    """The ERR texts of a listed message on one line (the journal's JSON, masked)."""
    if not errors:
        return ""
    return "; ".join(e.get("text", "") for e in json.loads(errors))


async def show(page: Page, message_id: str, body: dict | None = None) -> Shown:
    try:
        m = await page.ask("GET", f"messages/{message_id}")
    except AdminError as e:
        return Shown(page.t("message_n", id=message_id), tag("p", e.message, class_="error"), e.code)
    here = f"{PATH}/{m['id']}"
    facts = [("status", tag("strong", page.t("status_" + m["status"]), class_="status-" + m["status"])),
             ("ack", m["ack_code"] or "-"), ("acks_sent", ", ".join(m["acks_sent"] or []) or "-"),
             ("received", when(m["received_at"])), ("transport", m["transport"]), ("sender", m["sender"] or "-"),
             ("client", m["client"] or "-"), ("control_id", m["control_id"] or "-"),
             ("message_type", m["message_type"] or "-"), ("plugin", m["plugin"] or "-"),
             ("size", page.t("bytes", count=m["raw_bytes"]))]
    parts = [tag("dl", [(tag("dt", page.t(k)), tag("dd", v)) for k, v in facts], id="decision")]
    parts.append(tag("h2", page.t("errors")))
    parts.append(table([page.t(h) for h in ("location", "code", "text")],
                       [[e.get("location") or "-", e.get("code"), e.get("text")] for e in m["errors"]], id="errors")
                 if m["errors"] else tag("p", page.t("no_errors")))
    if m.get("not_routed"):
        parts.append(table([page.t("destination"), page.t("not_routed")],
                           [[n["destination"], n["text"] or n["reason"]] for n in m["not_routed"]]))
    parts.append(tag("h2", page.t("attempts")))
    parts.append(table([page.t(h) for h in ("id", "received", "ack", "status")],
                       [[link(f"{PATH}/{a['id']}", a["id"]) if a["id"] != m["id"] else tag("strong", a["id"]),
                         when(a["received_at"]), a["ack_code"] or "-", page.t("status_" + a["status"])]
                        for a in m["attempts"]], id="attempts"))
    parts.append(tag("h2", page.t("outbox_rows")))
    parts.append(table([page.t(h) for h in ("row", "destination", "state", "tries", "last_result", "last_error",
                                            "next_attempt", "delivered_at", "action")],
                       [[r["id"], r["destination"], page.t("state_" + r["state"]), r["attempts"],
                         r["last_result"] or "-",
                         r["last_error"] or "-", when(r["next_attempt_at"]), when(r["delivered_at"]),
                         page.button(f"outbox/rows/{r['id']}/retry", page.t("retry"), here)
                         if r["state"] == "dead" else ""] for r in m["outbox"]], id="outbox")
                 if m["outbox"] else tag("p", page.t("no_outbox_rows")))
    parts.append(tag("div", page.button(f"{here}/replay", page.t("replay"), here),
                     page.button(f"{here}/body", page.t("show_body"), here), class_="actions"))
    if body is not None:
        text = body["body"].replace("\r\n", "\n").replace("\r", "\n")
        parts.append(tag("h2", page.t("body")))
        parts.append(tag("p", page.t("body_read_logged"), class_="note"))
        parts.append(tag("pre", text, id="body"))
    return Shown(page.t("message_n", id=m["id"]), join(*parts))


async def show_body(page: Page, form: dict[str, str], message_id: str) -> Shown:
    body = await page.ask("GET", f"messages/{message_id}/body")
    return await show(page, message_id, body)


async def replay(page: Page, form: dict[str, str], message_id: str) -> Redirect:
    answer = await page.ask("POST", f"messages/{message_id}/replay")
    [entry] = answer["replayed"]
    page.flash("ok" if entry["ack_code"] == "AA" else "error", replay_note(page, entry))
    return Redirect(f"{PATH}/{entry['message_id'] or message_id}")


def replay_note(page: Page, entry: dict) -> str:
    if entry["skipped"]:
        return page.t("replay_skipped", id=entry["id"], reason=entry["skipped"])
    errors = "; ".join(e["text"] for e in entry["errors"])
    return page.t("replayed_one", id=entry["id"], was=entry["was"] or "-", now=entry["ack_code"] or "-",
                  new=entry["message_id"] or "-", queued=entry["queued"]) + (f" ({errors})" if errors else "")


def message_link(message_id: int) -> Markup:
    return link(f"{PATH}/{segment(message_id)}", message_id)
