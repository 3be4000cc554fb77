"""The BHXH plugin (issue 18): the Vietnam Social Security portal's intake API on the gateway,
and the cross-check of what reached the record store against what reached BHXH."""
