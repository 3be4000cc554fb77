"""The console's words in English (the same keys as :mod:`.text_vi`). ``{name}`` is filled in."""

TEXT = {
    # frame and sign-in
    "sign_in": "Sign in", "sign_out": "Sign out", "admin_token": "Admin token",
    "login_token_intro": "Sign in with the admin token: the value of the variable auth.admin_token_env names.",
    "login_loopback_intro": "No admin token is configured (auth.admin_token_env): the console answers this computer "
                            "only.",
    "login_csrf_refused": "The sign-in form had expired or came from another page; sign in again.",
    "csrf_refused": "The form did not carry this session's security token (CSRF); nothing was done. Reload the page "
                    "and try again.",
    "refused": "Refused", "error": "Error", "not_found": "No such page", "too_large": "The form is too large.",
    # destinations
    "destinations": "Destinations", "destination": "Destination", "kind": "Kind", "state": "State",
    "depth": "Queued", "dead": "Dead", "delivered": "Delivered", "oldest_age": "Oldest undelivered",
    "circuit": "Circuit", "in_flight": "In flight", "action": "Action", "paused": "paused", "running": "running",
    "pause": "Pause", "resume": "Resume",
    "destinations_intro": "{pending} records wait for delivery in all.",
    "paused_done": "{destination} is paused: no new deliveries start (those in flight finish).",
    "resumed_done": "{destination} delivers again.",
    # messages
    "messages": "Messages", "search": "Search", "any": "any", "control_id": "Control ID", "facility": "Facility",
    "sender": "Sender", "status": "Status", "message_type": "Type", "since": "From", "until": "Until",
    "person": "Person (id or identifier)", "id": "ID", "received": "Received", "ack": "ACK", "errors": "Errors",
    "no_messages": "No message matches.",
    "newest_only": "The newest {count} that match; narrow the search to see older ones.",
    "message_n": "Message {id}", "acks_sent": "ACKs sent",
    "transport": "Transport", "client": "Client", "plugin": "Plugin", "size": "Size", "bytes": "{count} bytes",
    "location": "Location", "code": "Code", "text": "Text", "no_errors": "No errors.",
    "not_routed": "Not routed", "attempts": "Attempts", "outbox_rows": "Deliveries", "row": "Row",
    "tries": "Tries", "person_id": "Person",
    "last_result": "Last result", "last_error": "Last error", "next_attempt": "Next attempt",
    "delivered_at": "Delivered", "no_outbox_rows": "Nothing was queued for delivery.", "retry": "Retry",
    "replay": "Replay", "show_body": "Show body", "body": "Body",
    "body_read_logged": "Reading a body is recorded, with who read it and when.",
    "status_accepted": "accepted", "status_error": "error", "status_rejected": "rejected",
    "status_ignored": "ignored",
    "state_pending": "pending", "state_waiting": "waiting", "state_in_flight": "in flight",
    "state_delivered": "delivered", "state_dead": "dead",
    "replayed_one": "Message {id} replayed: was {was}, now {now}; new attempt {new}, {queued} records queued.",
    "replay_skipped": "Message {id} was not replayed: {reason}",
    # dead letters and replay of errors
    "dead_letters": "Dead letters", "message": "Message", "updated": "Updated",
    "no_dead_letters": "No dead letters.",
    "retried_done": "Row {row} is pending again.",
    "replay_errors": "Replay errors",
    "replay_errors_intro": "Decide again the messages answered with an error or a refusal, received in this time "
                           "range (after fixing the plugin or the configuration).",
    "replayed_count": "{count} messages replayed.", "more": "More match: run it again.",
    "was": "Was", "now": "Now", "new_message": "New attempt", "queued": "Queued", "note": "Note",
    # identity review
    "reviews": "Identity review", "no_reviews": "No reviews waiting.", "review_n": "Review {id}: {reason}",
    "opened": "Opened {when}", "role": "Role", "name": "Name", "birth_date": "Born", "person_status": "Status",
    "subject": "subject", "candidate": "candidate", "accept": "Accept", "reject": "Reject",
    "accepted_done": "Review {id} accepted: linked with {chosen}.", "rejected_done": "Review {id} rejected.",
    "reason_twins_without_birth_order": "twins without a birth order",
    "reason_two_candidates": "two candidates",
    "reason_mother_identifiers_changed": "the mother is named by identifiers the index does not know",
    "person_identified": "identified", "person_provisional": "provisional", "person_replaced": "merged",
    "person_unknown": "unknown",
}
