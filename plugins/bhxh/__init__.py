"""The BHXH plugin (issue 18): the gateway's side of the BHXH receiving portal — signed claim
submission, the portal's intake API on the gateway, and the cross-check of what reached the
record store against what reached BHXH, the BHYT card check, population and card lists — built on the public plugin surface only
(``gateway.plugin``). See README.md in this folder."""
