"""What the BHXH plugin ships for tests: a faithful double of the BHXH receiving portal
(:mod:`plugins.bhxh.testing.portal_double`: token, check-in, claims) and of its card check
(:mod:`plugins.bhxh.testing.card_double`, mounted on the same server or standing alone), for this
plugin's tests and an integrator's own."""
from plugins.bhxh.portal import password_hash
from plugins.bhxh.testing.portal_double import Accepted, Fault, PortalDouble

__all__ = ["Accepted", "Fault", "PortalDouble", "password_hash"]
