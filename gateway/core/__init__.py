"""The gateway's core: everything a plugin may import, and nothing that knows a vendor."""
