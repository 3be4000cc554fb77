"""Bundled plugins. Each is loaded through the ``hssk_gateway.plugins`` entry point, exactly like a
third-party plugin, and imports of the gateway only ``gateway.plugin`` (its tests ``gateway.testing``
besides, and the repository's own test support)."""
