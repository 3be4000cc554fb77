"""The destinations page: each destination's state, queue depth, oldest undelivered age, circuit,
and the pause / resume button — ``GET /admin/outbox`` and ``POST /admin/destinations/D/pause``."""
from __future__ import annotations

from gateway.transports.console.markup import join, table, tag
from gateway.transports.console.page import Page, Redirect, Shown, age, segment

PATH = "destinations"


async def show(page: Page) -> Shown:
    status = await page.ask("GET", "outbox")
    rows = []
    for name, entry in sorted(status["destinations"].items()):
        paused = entry.get("paused")
        depth = entry.get("pending", 0) + entry.get("waiting", 0) + entry.get("in_flight", 0)
        action = "resume" if paused else "pause"
        rows.append([
            tag("strong", name), entry.get("kind") or "-",
            tag("span", page.t("paused") if paused else page.t("running"),
                class_="state paused" if paused else "state running"),
            depth, entry.get("dead", 0), entry.get("delivered", 0), age(entry.get("oldest_pending_age_seconds")),
            entry.get("circuit_state") or "-", entry.get("deliveries_in_flight", 0),
            page.button(f"{PATH}/{segment(name)}/{action}", page.t(action), PATH, danger=not paused)])
    body = join(
        tag("p", page.t("destinations_intro", pending=status.get("pending_total", 0))),
        table([page.t(h) for h in ("destination", "kind", "state", "depth", "dead", "delivered", "oldest_age",
                                   "circuit", "in_flight", "action")], rows, id="destinations"))
    return Shown(page.t("destinations"), body)


async def pause(page: Page, form: dict[str, str], dest: str) -> Redirect:
    answer = await page.ask("POST", f"destinations/{dest}/pause")
    page.flash("ok", page.t("paused_done", destination=answer["destination"]))
    return Redirect(PATH)


async def resume(page: Page, form: dict[str, str], dest: str) -> Redirect:
    answer = await page.ask("POST", f"destinations/{dest}/resume")
    page.flash("ok", page.t("resumed_done", destination=answer["destination"]))
    return Redirect(PATH)
