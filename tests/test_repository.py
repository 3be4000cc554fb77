"""What a clone of the repository promises on its own: the license it declares, and nothing that
needs a file outside it."""
import configparser
import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: SHA-256 of the Apache License 2.0 text as published at https://www.apache.org/licenses/LICENSE-2.0.txt.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_file_is_the_standard_text_of_the_license_setup_cfg_declares():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "setup.cfg", encoding="utf-8")

    assert metadata["metadata"]["license"] == "Apache-2.0"
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
