"""The BHXH plugin (issue 18): what the gateway takes from and gives to Vietnam Social Security.

Written against the public plugin surface only (``gateway.plugin``), registered under the entry
point ``bhxh`` like every bundled plugin. Its parts each live in modules of their own, and
:mod:`plugins.bhxh.plugin` only wires their hooks:

- population and card lists, ``hssk-gateway bhxh import FILE`` (:mod:`plugins.bhxh.population`,
  :mod:`plugins.bhxh.population_import`): residents into the person index in bulk, with their
  residence, and each new or changed one to the destinations.
"""
