"""A bhxh destination's table is checked at start-up (and by check-config), naming the key."""
from __future__ import annotations

import pytest

from gateway.plugin import ConfigError
from gateway.testing import GatewayUnderTest


@pytest.mark.parametrize("change,key,says", [
    ({"format": "json"}, "destinations.bhxh.format", 'must be "xml130"'),
    ({"password_env": "HSSK_TEST_UNSET_PASSWORD"}, "destinations.bhxh.password_env", "is not set"),
    ({"pkcs12_password_env": "HSSK_TEST_BHXH_PASSWORD"}, "destinations.bhxh.pkcs12_file", "wrong password"),
    ({"ma_tinh": "092"}, "destinations.bhxh.ma_tinh", "2-digit province code"),
    ({"standard": "4210"}, "destinations.bhxh.standard", "must be one of 130, 4750, 3176"),
])
def test_a_wrong_bhxh_table_stops_start_up_naming_the_key(tmp_path, hssk_settings, change, key, says):
    settings = {**hssk_settings, **{f"destinations.bhxh.{k}": v for k, v in change.items()}}

    with pytest.raises(ConfigError) as refused:
        GatewayUnderTest(tmp_path, ["bhxh", "dhg_his"], settings)

    assert key in str(refused.value) and says in str(refused.value)
