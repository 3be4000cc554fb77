"""Test doubles of the BHXH portal, for the bhxh plugin's tests and for a site's own."""
