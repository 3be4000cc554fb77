"""The marks of the plugin contract, which every layer above this one may need: ``hookimpl``
makes a function (or method) a hook implementation of this gateway, and :class:`PluginDescription`
is what ``hssk_describe`` returns.

The hooks themselves are specified, each with when it is called and what it may return, in
:mod:`gateway.core.hookspecs`, part of the machinery. The national rules are built-in plugins a
layer below the machinery (:mod:`gateway.rules`), so the marks they implement hooks with live
here. A plugin imports both from :mod:`gateway.plugin`.
"""
from __future__ import annotations

from dataclasses import dataclass

import pluggy

PROJECT = "hssk_gateway"

hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class PluginDescription:
    """What ``hssk-gateway plugins`` shows: a plugin's name and, in words, what it claims.

    ``message_types`` (``ADT^A04``, as :attr:`Hl7Message.message_type` gives them) and
    ``facilities`` (MSH-4, MACSKCB) are the same claims as data: metrics label a message's type
    and facility only with such known values (and the facilities of ``[clients.NAME]``), every
    other value a sender writes as ``other``, so that strangers cannot grow the series. Added after
    0.1.0; a plugin that leaves them empty sees its messages counted under ``other``.
    """

    name: str
    claims: str
    message_types: frozenset[str] = frozenset()
    facilities: frozenset[str] = frozenset()
