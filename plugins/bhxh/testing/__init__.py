"""What the BHXH plugin ships for tests: a faithful double of the BHXH receiving portal
(:mod:`plugins.bhxh.testing.portal_double`), for this plugin's tests, the other BHXH helpers'
and an integrator's own."""
from plugins.bhxh.portal import password_hash
from plugins.bhxh.testing.portal_double import Accepted, Fault, PortalDouble

__all__ = ["Accepted", "Fault", "PortalDouble", "password_hash"]
