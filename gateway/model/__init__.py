"""The canonical model, the bottom layer: the records every adapter normalises into
(:mod:`~gateway.model.records`, the claim tables in :mod:`~gateway.model.claim`), the envelope a
message arrives in, the outcome of deciding it and the issues that explain it, the masking of
what they hold in everything an operator reads, and the marks a plugin implements hooks with
(:mod:`~gateway.model.hooks`). It imports nothing else of the gateway; every layer above speaks
it (see the README's "Layout")."""
