"""Bundled plugins. Each is loaded through the ``hssk_gateway.plugins`` entry point, exactly like a
third-party plugin, and imports only ``gateway.core`` and ``gateway.formats``."""
