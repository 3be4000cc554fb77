"""The gateway's own input kinds, registered as built-in plugins through ``hssk_sources`` exactly as
a plugin registers its own (see :mod:`gateway.core.sources`): :mod:`gateway.sources.hl7v2`
(``core.hl7v2``) and :mod:`gateway.sources.xml130` (``core.xml130``)."""
