"""What a clone of the repository promises on its own: the license it declares, and nothing that
needs a file outside it."""
import configparser
import dataclasses
import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: SHA-256 of the Apache License 2.0 text as published at https://www.apache.org/licenses/LICENSE-2.0.txt.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_file_is_the_standard_text_of_the_license_setup_cfg_declares():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "setup.cfg", encoding="utf-8")

    assert metadata["metadata"]["license"] == "Apache-2.0"
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256


def _documented_keys(text: str) -> set[str]:
    """Dotted keys ``config/gateway.toml`` documents, set or commented out (``# key = value``):
    ``mllp.listen``, ``destinations.*.url``, ``clients.*.facilities``; a ``[plugins.NAME]`` table
    is the plugin's own (its README documents it) and is left out."""
    keys, section = set(), ""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        header = re.fullmatch(r"\[([a-z0-9_.]+)\]", line.split("#")[0].strip())
        if header:
            parts = header.group(1).split(".")
            section = parts[0] if len(parts) == 1 else f"{parts[0]}.*"
            continue
        found = re.match(r"([a-z0-9_]+)\s*=\s*\S", line)
        if found and section != "plugins.*":
            keys.add(f"{section}.{found.group(1)}" if section else found.group(1))
    return keys


def _config_keys() -> set[str]:
    """Every key the configuration dataclasses of ``gateway/config.py`` take, and those of the
    built-in destination kinds' tables."""
    from gateway.config import ClientConfig, DestinationConfig, GatewayConfig, PluginsConfig
    from gateway.destinations.builtin import KINDS

    def fields(cls, prefix: str, skip: set[str] = frozenset()) -> set[str]:
        return {prefix + f.name for f in dataclasses.fields(cls) if f.name not in skip}

    keys = set()
    for f in dataclasses.fields(GatewayConfig):
        if dataclasses.is_dataclass(f.default):
            skip = {"settings"} if f.default.__class__ is PluginsConfig else set()
            keys |= fields(type(f.default), f"{f.name}.", skip)
        elif f.name not in ("destinations", "clients"):
            keys.add(f.name)
    for kind in KINDS:
        keys |= fields(kind.settings, "destinations.*.")
    return keys | fields(DestinationConfig, "destinations.*.", {"name", "options"}) | fields(ClientConfig, "clients.*.",
                                                                                          {"name"})


def test_the_shipped_config_documents_every_key_and_only_keys_that_exist():
    documented = _documented_keys((REPO / "config" / "gateway.toml").read_text(encoding="utf-8"))
    known = _config_keys()

    assert sorted(known - documented) == [], "keys config/gateway.toml does not document"
    assert sorted(documented - known) == [], "keys config/gateway.toml documents that gateway/config.py lacks"


def _readme_metric_rows() -> dict[str, str]:
    """First column → second column of the README's metrics table (a row may name several metrics)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1]
    table = section[section.index("\n|") + 1:].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`(hssk_[a-z_]+)`", cells[0]):
            rows[name] = cells[1] if len(cells) > 1 else ""
    return rows


def test_the_readme_metrics_table_lists_every_metric_with_its_labels_and_every_outbox_state():
    from prometheus_client.metrics import MetricWrapperBase

    from gateway.core.metrics import Metrics
    from gateway.core.outbox import STATES

    rows = _readme_metric_rows()
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            assert name in rows, f"{name} is not in the README's metrics table"
            assert all(label in rows[name] for label in metric._labelnames), f"{name}: labels {metric._labelnames}"
    assert all(re.search(rf"\b{state}\b", rows["hssk_outbox_rows"]) for state in STATES), rows["hssk_outbox_rows"]


def test_nothing_in_the_readme_makefile_or_benchmarks_reaches_outside_the_repository():
    files = [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "bench").iterdir())]
    outside = re.compile(r"\.\./shared|parents?\b[^\n]*[\"']shared[\"']")

    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in files if path.is_file()
             for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if outside.search(line)]
    assert found == []
