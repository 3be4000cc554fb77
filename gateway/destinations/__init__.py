"""The built-in destination kinds (:mod:`gateway.destinations.builtin`), registered through
``hssk_destination_kinds`` exactly as a plugin registers its own. Each implements the interface
of :mod:`gateway.core.destination`; the machinery imports this package only to register them
(:mod:`gateway.core.plugins`)."""
