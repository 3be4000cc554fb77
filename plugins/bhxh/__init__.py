"""The BHXH plugin (issue 18): the gateway's side of the BHXH receiving portal, built on the
public plugin surface only (``gateway.plugin``). See README.md in this folder."""
