"""Configuration: defaults < TOML file < HSSK_ environment < overrides, and every error names the
dotted key and the rule it broke."""
from pathlib import Path

import pytest
from twisted.internet import reactor

from gateway.app import validate_runtime
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.core.plugins import build_plugin_manager

REPO = Path(__file__).resolve().parents[2]


def write_toml(tmp_path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_without_file_or_environment():
    config = load_config(environ={})

    assert config == GatewayConfig()
    assert config.mllp.max_frame_bytes == 32 * 1024 * 1024
    assert config.mllp.listen == "tcp:2575:interface=127.0.0.1"
    assert config.store.synchronous == "FULL"
    assert config.pipeline.timeout_seconds == 10.0
    assert config.database_path == Path("var") / "gateway.db"


def test_toml_file_values_are_used(tmp_path):
    path = write_toml(tmp_path, """
data_dir = "/srv/hssk"
[mllp]
max_frame_bytes = 4096
charset = "8859/1"
[pipeline]
timeout_seconds = 3
supported_versions = ["2.5", "2.5.1"]
[plugins.viettel_his]
sending_applications = ["VTHIS"]
""")

    config = load_config(path, environ={})

    assert config.data_dir == "/srv/hssk"
    assert (config.mllp.max_frame_bytes, config.mllp.charset) == (4096, "8859/1")
    assert config.mllp.max_connections == 512
    assert config.pipeline.timeout_seconds == 3.0 and isinstance(config.pipeline.timeout_seconds, float)
    assert config.pipeline.supported_versions == ("2.5", "2.5.1")
    assert config.plugin_settings("viettel_his") == {"sending_applications": ["VTHIS"]}


def test_bundled_config_file_loads():
    config = load_config(REPO / "config" / "gateway.toml", environ={})

    assert config.mllp.listen == "tcp:2575:interface=127.0.0.1"
    assert "HIS_THU_NGHIEM" in config.plugin_settings("viettel_his")["sending_applications"]


def test_environment_variable_overrides_a_section_key():
    config = load_config(environ={"HSSK_MLLP__MAX_FRAME_BYTES": "1024", "HSSK_MLLP__LISTEN": "tcp:2576",
                                  "UNRELATED": "x"})

    assert config.mllp.max_frame_bytes == 1024
    assert config.mllp.listen == "tcp:2576"


def test_environment_variable_sets_a_plugin_setting():
    config = load_config(environ={"HSSK_PLUGINS__VIETTEL_HIS__SENDING_APPLICATIONS": '["VTHIS", "HIS_B"]'})

    assert config.plugin_settings("viettel_his")["sending_applications"] == ["VTHIS", "HIS_B"]


@pytest.mark.parametrize(("env", "overrides", "expected"), [
    ({}, {}, 1000),
    ({"HSSK_MLLP__MAX_FRAME_BYTES": "2000"}, {}, 2000),
    ({"HSSK_MLLP__MAX_FRAME_BYTES": "2000"}, {"mllp.max_frame_bytes": 3000}, 3000),
    ({}, {"mllp.max_frame_bytes": 3000}, 3000),
    ({"HSSK_MLLP__MAX_FRAME_BYTES": "2000"}, {"mllp.max_frame_bytes": None}, 2000),
])
def test_precedence_is_file_then_environment_then_overrides(tmp_path, env, overrides, expected):
    path = write_toml(tmp_path, "[mllp]\nmax_frame_bytes = 1000\n")

    assert load_config(path, environ=env, overrides=overrides).mllp.max_frame_bytes == expected


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"overrides": {"mllp.max_frame_bytez": 10}}, "mllp.max_frame_bytez"),
    ({"overrides": {"colour": "blue"}}, "colour"),
    ({"environ": {"HSSK_STORE__FSYNC": "always"}}, "store.fsync"),
])
def test_unknown_key_is_an_error_naming_the_dotted_key(kwargs, key):
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        load_config(**kwargs)

    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: unknown key")


def test_unknown_key_in_the_file_is_an_error_naming_the_dotted_key(tmp_path):
    path = write_toml(tmp_path, "[http]\nmax_body = 10\n")

    with pytest.raises(ConfigError, match=r"^http\.max_body: unknown key \(known keys: idle_timeout_seconds, listen, max_body_bytes, "):
        load_config(path, environ={})


def test_negative_max_frame_bytes_is_an_error_naming_key_and_rule(tmp_path):
    path = write_toml(tmp_path, "[mllp]\nmax_frame_bytes = -1\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    assert str(caught.value) == "mllp.max_frame_bytes: must be a positive integer, got -1"
    assert (caught.value.key, caught.value.rule) == ("mllp.max_frame_bytes", "must be a positive integer, got -1")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mllp.max_frame_bytes", "big", "mllp.max_frame_bytes: must be an integer, got 'big'"),
    ("mllp.max_frame_bytes", True, "mllp.max_frame_bytes: must be an integer, got True"),
    ("pipeline.timeout_seconds", 0, "pipeline.timeout_seconds: must be a positive number, got 0.0"),
    ("pipeline.workers", 65, "pipeline.workers: must be between 1 and 64, got 65"),
    ("store.synchronous", "SOMETIMES", "store.synchronous: must be one of OFF, NORMAL, FULL, EXTRA, got 'SOMETIMES'"),
    ("log_format", "xml", "log_format: must be 'text' or 'json', got 'xml'"),
    ("mllp.listen", 2575, "mllp.listen: must be a string, got 2575"),
    ("pipeline.supported_versions", "2.5", "pipeline.supported_versions: must be a list of strings, got '2.5'"),
    ("outbox.rejected_retention_days", 0, "outbox.rejected_retention_days: must be a positive number, got 0.0"),
    ("outbox.rejected_retention_days", "1y", "outbox.rejected_retention_days: must be a number, got '1y'"),
])
def test_wrong_value_is_an_error_naming_key_and_rule(key, value, message):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={key: value})

    assert str(caught.value) == message


def test_section_that_is_not_a_table_is_an_error(tmp_path):
    path = write_toml(tmp_path, 'mllp = "tcp:2575"\n')

    with pytest.raises(ConfigError, match=r"^mllp: must be a table$"):
        load_config(path, environ={})


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--config: file .*nowhere\.toml' does not exist"):
        load_config(tmp_path / "nowhere.toml", environ={})


def test_file_that_is_not_toml_is_an_error(tmp_path):
    path = write_toml(tmp_path, "[mllp\nlisten = \n")

    with pytest.raises(ConfigError, match=r"^--config: .* is not valid TOML"):
        load_config(path, environ={})


@pytest.mark.parametrize(("key", "endpoint"), [
    ("mllp.listen", "nonsense:2575"),
    ("mllp.listen", "tcp:notaport"),
    ("http.listen", "tcp:8080:bogus=1"),
])
def test_bad_endpoint_string_fails_runtime_validation_naming_the_listener(key, endpoint):
    config = load_config(environ={}, overrides={key: endpoint})

    with pytest.raises(ConfigError) as caught:
        validate_runtime(config, reactor)

    assert caught.value.key == key
    assert "is not a Twisted endpoint string" in caught.value.rule


@pytest.mark.parametrize("key", ["mllp.charset", "mllp.default_charset"])
def test_unknown_charset_fails_runtime_validation_naming_the_key(key):
    config = load_config(environ={}, overrides={key: "KLINGON-8"})

    with pytest.raises(ConfigError) as caught:
        validate_runtime(config, reactor)

    assert str(caught.value) == f"{key}: unknown character set 'KLINGON-8'"


def test_data_dir_that_is_a_file_fails_runtime_validation(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path / "afile")})

    with pytest.raises(ConfigError, match=r"^data_dir: .* exists and is not a directory"):
        validate_runtime(config, reactor)


def test_valid_configuration_passes_runtime_validation(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), "mllp.charset": "8859/1",
                                                "http.listen": "tcp:0:interface=127.0.0.1"})

    validate_runtime(config, reactor)


def test_bad_plugin_setting_stops_start_up_naming_the_key(tmp_path):
    path = write_toml(tmp_path, '[plugins.viettel_his]\nsending_applications = "x"\n')
    config = load_config(path, environ={})

    with pytest.raises(ConfigError) as caught:
        build_plugin_manager(config)

    assert caught.value.key == "plugins.viettel_his.sending_applications"
    assert "must be a list of non-empty strings" in caught.value.rule


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://store.example/records", "must be an http:// or https:// URL with a host"),
    ("https:///records", "must be an http:// or https:// URL with a host"),
    ("https://store.example:99999/records", "is not a valid URL"),
    ("https://store.example:0/records", "needs a non-zero port"),
    ("https://user:secret@store.example/records", "must not carry credentials"),
    ("https://user:secret@store.example:99999/records", "must not carry credentials"),
])
def test_destination_url_errors_name_the_key_and_never_echo_credentials(url, message):
    config = load_config(environ={}, overrides={"destinations.store.kind": "http", "destinations.store.url": url})

    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(config, load_entry_points=False)

    assert raised.value.key == "destinations.store.url"
    assert message in str(raised.value)
    assert "secret" not in str(raised.value)


# --- clients and auth -------------------------------------------------------------------------------

DIGEST = "ab" * 32


def test_client_tables_load_with_their_facilities_tokens_and_addresses(tmp_path):
    config = load_config(write_toml(tmp_path, f"""
[auth]
required = true
[clients.bv_q1]
facilities = ["79001"]
token_sha256 = ["{DIGEST}"]
addresses = ["10.79.1.0/24", "2001:db8::/64"]
"""), environ={})

    [client] = config.clients
    assert (client.name, client.facilities, client.token_sha256) == ("bv_q1", ("79001",), (DIGEST,))
    assert client.addresses == ("10.79.1.0/24", "2001:db8::/64")
    assert config.auth.required is True


@pytest.mark.parametrize("text, key, message", [
    ("[auth]\nrequired = true", "auth.required", "no [clients.NAME] table"),
    (f'[clients.a]\ntoken_sha256 = ["{DIGEST}"]', "clients.a.facilities", "is required"),
    (f'[clients.a]\nfacilities = []\ntoken_sha256 = ["{DIGEST}"]', "clients.a.facilities", "must list the facility"),
    ('[clients.a]\nfacilities = ["79001"]', "clients.a.token_sha256", "needs token_sha256, addresses or certificates"),
    ('[clients.a]\nfacilities = ["79001"]\ntoken_sha256 = ["secret"]', "clients.a.token_sha256", "64 hex digits"),
    ('[clients.a]\nfacilities = ["79001"]\naddresses = ["10.1.0.300"]', "clients.a.addresses", "'10.1.0.300'"),
    ('[clients.a]\nfacilities = ["79001"]\naddresses = ["10.1.0.0/16"]\n'
     '[clients.b]\nfacilities = ["79002"]\naddresses = ["10.1.2.0/24"]', "clients.b.addresses",
     "10.1.2.0/24 overlaps 10.1.0.0/16 of clients.a"),
    (f'[clients.a]\nfacilities = ["79001"]\ntoken_sha256 = ["{DIGEST}"]\n'
     f'[clients.b]\nfacilities = ["79002"]\ntoken_sha256 = ["{DIGEST.upper()}"]', "clients.b.token_sha256",
     "also clients.a's"),
    ('[clients.a]\nname = "b"\nfacilities = ["79001"]\naddresses = ["10.0.0.1"]', "clients.a.name", "own name"),
])
def test_client_table_errors_name_the_key_and_the_rule(tmp_path, text, key, message):
    with pytest.raises(ConfigError) as error:
        load_config(write_toml(tmp_path, text), environ={})

    assert error.value.key == key
    assert message in error.value.rule


def test_failed_authentication_limits_default_to_ten_a_minute_then_five_minutes_out_and_follow_the_environment():
    default = load_config(environ={}).auth
    configured = load_config(environ={"HSSK_AUTH__MAX_FAILURES": "5", "HSSK_AUTH__LOCKOUT_SECONDS": "900"}).auth

    assert (default.max_failures, default.failure_window_seconds, default.lockout_seconds) == (10, 60.0, 300.0)
    assert default.max_tracked_peers == 10_000
    assert (configured.max_failures, configured.lockout_seconds) == (5, 900.0)


@pytest.mark.parametrize("text, key, message", [
    ("max_failures = 0", "auth.max_failures", "must be a positive integer, got 0"),
    ("max_failures = 2.5", "auth.max_failures", "must be an integer, got 2.5"),
    ("failure_window_seconds = -1", "auth.failure_window_seconds", "must be a positive number, got -1.0"),
    ('lockout_seconds = "5m"', "auth.lockout_seconds", "must be a number, got '5m'"),
    ("max_tracked_peers = 0", "auth.max_tracked_peers", "must be a positive integer, got 0"),
])
def test_failed_authentication_limit_errors_name_the_key_and_the_rule(tmp_path, text, key, message):
    with pytest.raises(ConfigError) as error:
        load_config(write_toml(tmp_path, f"[auth]\n{text}"), environ={})

    assert error.value.key == key
    assert error.value.rule == message


def test_admin_token_variable_that_is_not_set_fails_runtime_validation(tmp_path, monkeypatch):
    monkeypatch.delenv("HSSK_TEST_ADMIN_TOKEN", raising=False)
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), "auth.admin_token_env": "HSSK_TEST_ADMIN_TOKEN"})

    with pytest.raises(ConfigError) as error:
        validate_runtime(config, reactor)

    assert error.value.key == "auth.admin_token_env"
    assert "HSSK_TEST_ADMIN_TOKEN, which is not set" in error.value.rule
    monkeypatch.setenv("HSSK_TEST_ADMIN_TOKEN", "t")
    validate_runtime(config, reactor)


def test_rejected_messages_keep_their_bodies_as_long_as_the_rest_unless_told_otherwise():
    assert load_config(environ={}, overrides={"outbox.retention_days": 7}).outbox.rejected_retention == 7.0
    assert load_config(environ={}, overrides={"outbox.retention_days": 7, "outbox.rejected_retention_days": 90}
                       ).outbox.rejected_retention == 90.0
