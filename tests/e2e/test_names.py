"""Names are defined once, in the core (src/core/names.rs): the harness reads them from
harness/names.json, which must be what `trustip names` prints, and every trustip counter,
filter-state key or root id that a test, a sample or the README spells out must be one of them."""

from __future__ import annotations

import json
import re
import subprocess

from cli_support import REPO, cli_path
from harness import names

# Whole names only: an f-string template such as trustip.http.reject_{reason} is not a name.
COUNTER = re.compile(r"\btrustip\.(?:http|network)\.[a-z_]+(?![\w{])")
FILTER_STATE = re.compile(r"\bwasm\.trustip\.[a-z_]+(?![\w{])")
ROOT_ID = re.compile(r"root_id:\s*\"?(trustip-[a-z]+)")


def test_names_json_is_what_the_binary_prints():
    out = subprocess.run([str(cli_path()), "names"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == names.NAMES, "regenerate: trustip names > tests/e2e/harness/names.json"


def spelled_out_files():
    yield from sorted((REPO / "tests" / "e2e").rglob("*.py"))
    yield from sorted((REPO / "envoy").glob("*.yaml"))
    yield from sorted((REPO / "deploy").rglob("*.y*ml"))
    yield REPO / "README.md"
    yield from sorted((REPO / "docs").rglob("*.md"))


def test_every_spelled_out_name_is_defined_by_the_core():
    counters = {name for role in names.COUNTERS.values() for name in role}
    filter_state = {names.CLIENT_IP_FILTER_STATE, names.REASON_FILTER_STATE}
    root_ids = {names.HTTP_ROOT_ID, names.NETWORK_ROOT_ID}
    unknown = []
    checked = 0
    for path in spelled_out_files():
        text = path.read_text(errors="replace")
        for pattern, known in ((COUNTER, counters), (FILTER_STATE, filter_state)):
            for match in pattern.finditer(text):
                checked += 1
                if match.group(0) not in known:
                    unknown.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        for match in ROOT_ID.finditer(text):
            checked += 1
            if match.group(1) not in root_ids:
                unknown.append(f"{path.relative_to(REPO)}: root_id {match.group(1)}")
    assert not unknown, "names no trustip build defines:\n" + "\n".join(unknown)
    # The scan found what it is meant to check (the suite and the samples use these names).
    assert checked > 50


def test_counter_helper_refuses_unknown_names():
    assert names.counter("http", "accept_xff") == "trustip.http.accept_xff"
    try:
        names.counter("network", "accept_xff")  # the network role walks no X-Forwarded-For
    except KeyError:
        pass
    else:
        raise AssertionError("accept_xff is not a network counter")
