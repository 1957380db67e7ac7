from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from appliance.services import media


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),  # AWS metadata over IPv6
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_only_public_addresses_may_be_fetched(address: str, refused: bool) -> None:
    assert media.address_refused(address) is refused


@pytest.mark.parametrize(
    ("mimetype", "allowed"),
    [
        ("image/png", True),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", True),
        ("application/pdf", True),
        ("text/html", False),
        ("application/pdfx", False),
        ("", False),
    ],
)
def test_content_types_match_exact_entries_and_families(mimetype: str, allowed: bool) -> None:
    rules = ["image/*", "application/pdf", "application/vnd.openxmlformats-officedocument.*"]
    assert media.type_allowed(mimetype, rules) is allowed


def test_base_type_drops_parameters() -> None:
    assert media.base_type("Audio/OGG; codecs=opus") == "audio/ogg"


def test_prune_drops_old_files_then_the_oldest_beyond_the_size(tmp_path: Path) -> None:
    now = time.time()
    for name, age_s in [("old", 7200), ("a", 300), ("b", 200), ("c", 100)]:
        path = tmp_path / name
        path.write_bytes(b"x" * 10)
        os.utime(path, (now - age_s, now - age_s))
    removed = media.prune(tmp_path, max_age_s=3600, max_bytes=20)
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
    assert media.prune(tmp_path / "absent", max_age_s=1) == 0
