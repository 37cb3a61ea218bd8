"""`trustip render --target envoy-gateway` validates against Envoy Gateway's published CRD
schemas (issue 11).

Every rendered document's kind and apiVersion must be a kind, group and served version of a CRD
in tests/data/envoy-gateway/ (see SOURCE.md there), and its `spec` must validate against that
version's `openAPIV3Schema.properties.spec`, with objects that declare `properties` closed (as
`kubectl apply --validate=strict` treats them) unless they carry
`x-kubernetes-preserve-unknown-fields`. The CEL rules (`x-kubernetes-validations`) are not
evaluated; the ones about rendered fields (targetRefs kinds, code type and source) are checked
by hand. Rendered for several policies and both builds: a strict `require` policy (native), a
policy requiring PROXY from every peer (native, PROXY not optional), a `use` policy with
`trust_source` (wasm, OCI image and https url), an existing Gateway. The policy embedded is the
file's. Usage errors are one line. No cluster needed."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from cli_support import REPO, CrdSchemas, cli, scratch_dir, write_policy  # noqa: F401  (cli is a fixture)

EG_CRDS = REPO / "tests" / "data" / "envoy-gateway"
DIGEST = "4c1f0a9e5b7d2c3e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
MODULE = "/usr/local/lib/envoy/libtrustip.so"

STRICT = {
    "rules": [{"from": ["10.0.0.0/8"], "proxy_protocol": "require", "health_check_paths": ["/healthz/ready"]}],
    "xff": {"trusted": ["173.245.48.0/20"]},
    "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
}
ALL_REQUIRE = {"rules": [{"from": ["192.0.2.0/24"], "proxy_protocol": "deny"}, {"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "require"}]}
USE = {
    "direct_peer": {"if_missing": "trust_source"},
    "rules": [{"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "use"}],
    "headers": {"x_forwarded_for": "overwrite", "strip": ["x-real-ip", "true-client-ip"]},
}

# name -> (policy, extra arguments, PROXY optional?, build)
CASES = {
    "native-strict": (STRICT, ["--build", "native", "--module", MODULE], True, "native"),
    "native-all-require": (ALL_REQUIRE, ["--build", "native", "--module", MODULE, "--namespace", "edge"], False, "native"),
    "native-existing-gateway": (STRICT, ["--build", "native", "--module", MODULE, "--gateway", "public"], True, "native"),
    "wasm-oci": (USE, ["--image", "oci://ghcr.io/example/trustip:0.1.0", "--image-digest", f"sha256:{DIGEST}"], True, "wasm"),
    "wasm-oci-pinned-strict": (USE, ["--image", f"oci://ghcr.io/example/trustip@sha256:{DIGEST}", "--strict-proxy", "--gateway", "public"], False, "wasm"),
    "wasm-https": (USE, ["--image", "https://example.com/trustip.wasm", "--image-digest", DIGEST, "--gateway-class", "internal"], True, "wasm"),
}


class EgSchemas(CrdSchemas):
    """The CRDs in tests/data/envoy-gateway, plus the CEL rules jsonschema does not check."""

    def __init__(self) -> None:
        super().__init__(EG_CRDS, namespaced=True)

    def errors(self, document: dict) -> list[str]:
        problems = super().errors(document)
        if problems and problems[0].startswith("no served CRD version"):
            return problems
        return problems + _cel(document)


def _cel(document: dict) -> list[str]:
    """The CEL rules of the stored CRDs that concern fields render writes, by hand."""
    problems = []
    spec = document.get("spec") or {}
    kind = document.get("kind")
    if kind in ("EnvoyExtensionPolicy", "ClientTrafficPolicy"):
        refs = spec.get("targetRefs")
        if not refs:
            problems.append("either targetRef or targetRefs must be used")
        allowed = {"Gateway", "ListenerSet"} | ({"HTTPRoute", "GRPCRoute", "UDPRoute", "TCPRoute", "TLSRoute"} if kind == "EnvoyExtensionPolicy" else set())
        for ref in refs or []:
            if ref.get("group") != "gateway.networking.k8s.io" or ref.get("kind") not in allowed:
                problems.append(f"targetRefs: {ref} is not a Gateway API {sorted(allowed)}")
    for wasm in spec.get("wasm") or []:
        code = wasm.get("code", {})
        for field, type_ in (("http", "HTTP"), ("image", "Image")):
            if (code.get("type") == type_) != (field in code):
                problems.append(f"wasm code: type {code.get('type')} with {sorted(code)}")
            # The CRD states the pattern in the description only (a kubebuilder marker that
            # did not become a schema pattern): checked here.
            sha256 = (code.get(field) or {}).get("sha256")
            if sha256 is not None and not re.fullmatch(r"[a-f0-9]{64}", sha256):
                problems.append(f"wasm code: {field}.sha256 {sha256!r} does not match ^[a-f0-9]{{64}}$")
    if kind == "EnvoyProxy":
        for entry in spec.get("dynamicModules") or []:
            source = entry.get("source", {})
            if source.get("type", "Local") == "Local" and "local" not in source:
                problems.append("If type is Local, local field needs to be set.")
    return problems


@pytest.fixture(scope="module")
def schemas() -> EgSchemas:
    return EgSchemas()


def render(cli, policy, *extra: str, expect: int = 0):  # noqa: F811
    path = write_policy(scratch_dir("envoy-gateway"), "policy", policy)
    return path, cli.run("render", "--config", path, "--target", "envoy-gateway", *extra, expect=expect)


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request, cli):  # noqa: F811
    policy, extra, optional, build = CASES[request.param]
    path, run = render(cli, policy, *extra)
    try:
        documents = [doc for doc in yaml.safe_load_all(run.out) if doc is not None]
    except yaml.YAMLError as error:
        pytest.fail(f"render printed YAML that does not parse: {error}\n{run.out}")
    return request.param, path, run.out, documents, extra, optional, build


def _one(documents: list[dict], kind: str) -> dict:
    (document,) = [d for d in documents if d["kind"] == kind]
    return document


def test_every_document_validates(rendered, schemas):
    name, _, _, documents, extra, _, build = rendered
    kinds = [d["kind"] for d in documents]
    expected = ["EnvoyProxy"] if build == "native" else []
    if "--gateway" not in extra:
        expected.append("Gateway")
    expected += ["ClientTrafficPolicy", "EnvoyExtensionPolicy"]
    assert kinds == expected, name
    for document in documents:
        assert schemas.errors(document) == [], document


def test_policies_target_the_gateway(rendered):
    _, _, _, documents, extra, _, _ = rendered
    gateway = extra[extra.index("--gateway") + 1] if "--gateway" in extra else "trustip"
    namespace = extra[extra.index("--namespace") + 1] if "--namespace" in extra else "default"
    for document in documents:
        assert document["metadata"]["namespace"] == namespace
        if document["kind"] in ("ClientTrafficPolicy", "EnvoyExtensionPolicy"):
            assert document["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}]
    if "--gateway" not in extra:
        spec = _one(documents, "Gateway")["spec"]
        assert spec["gatewayClassName"] == (extra[extra.index("--gateway-class") + 1] if "--gateway-class" in extra else "eg")
        assert spec["listeners"] == [{"name": "http", "protocol": "HTTP", "port": 80}]


def test_client_traffic_policy(rendered):
    _, _, text, documents, _, optional, _ = rendered
    spec = _one(documents, "ClientTrafficPolicy")["spec"]
    assert spec["proxyProtocol"] == {"optional": optional}
    # trustip owns client-IP detection: Envoy Gateway's would turn use_remote_address off.
    assert "clientIPDetection" not in spec and "enableProxyProtocol" not in spec
    assert spec["headers"] == {"withUnderscoresAction": "DropHeader"}


def test_extension_policy_runs_trustip_with_the_files_policy(rendered):
    _, path, _, documents, extra, _, build = rendered
    policy = json.loads(path.read_text())
    spec = _one(documents, "EnvoyExtensionPolicy")["spec"]
    if build == "wasm":
        assert "dynamicModule" not in spec
        (wasm,) = spec["wasm"]
        assert wasm["config"] == policy
        assert (wasm["name"], wasm["rootID"], wasm["failOpen"]) == ("trustip-http", "trustip-http", False)
        code = wasm["code"]
        image = extra[extra.index("--image") + 1]
        if image.startswith("oci://"):
            # Envoy Gateway's image url has no scheme; sha256 is the image digest.
            assert code == {"type": "Image", "image": {"url": image.removeprefix("oci://"), "sha256": DIGEST}}
        else:
            assert code == {"type": "HTTP", "http": {"url": image, "sha256": DIGEST}}
    else:
        assert "wasm" not in spec
        assert spec["dynamicModule"] == [{"name": "trustip", "filterName": "trustip-http", "config": policy}]
        proxy = _one(documents, "EnvoyProxy")
        assert proxy["spec"] == {"dynamicModules": [{"name": "trustip", "source": {"type": "Local", "local": {"path": MODULE}}}]}
        if "--gateway" not in extra:
            assert _one(documents, "Gateway")["spec"]["infrastructure"] == {
                "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": proxy["metadata"]["name"]}
            }


# --- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, extra, needle",
    [
        (USE, [], "needs --image"),
        (USE, ["--image", "oci://ghcr.io/example/trustip:0.1.0"], "pin the image"),
        (USE, ["--image", "https://example.com/trustip.wasm"], "add --image-digest"),
        (USE, ["--wasm", "target/trustip.wasm"], "not from a file"),
        (USE, ["--image", "oci://r.io/t:1", "--image-digest", DIGEST, "--image-pull-policy", "Always"], "only for --target istio"),
        (STRICT, ["--image", "oci://r.io/t:1", "--image-digest", DIGEST], "no_direct_peer"),
        ({**STRICT, "direct_peer": {"if_missing": "trust_source"}}, ["--image", "oci://r.io/t:1", "--image-digest", DIGEST], "rules[0] is a require rule"),
        (STRICT, ["--build", "native"], "needs --module PATH"),
        (STRICT, ["--build", "native", "--module", "libtrustip.so"], "absolute path"),
        (STRICT, ["--build", "native", "--module", MODULE, "--image", "oci://r.io/t:1"], "--module PATH"),
        (
            {"rules": [{"from": ["10.0.0.0/8"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-1"]}}]},
            ["--build", "native", "--module", MODULE],
            "keeps no TLVs",
        ),
        (STRICT, ["--build", "native", "--module", MODULE, "--health-check-path", "/healthz/ready"], "ClientTrafficPolicy healthCheck"),
        (STRICT, ["--build", "native", "--module", MODULE, "--tls-passthrough", "a.b=1.2.3.4:443"], "TLSRoute"),
        (STRICT, ["--build", "native", "--module", MODULE, "--gateway", "a", "--gateway-class", "b"], "none is written"),
    ],
)
def test_usage_errors_are_one_line(cli, policy, extra, needle):  # noqa: F811
    _, run = render(cli, policy, *extra, expect=2)
    assert run.out == ""
    assert needle in run.err, run.err
    assert len(run.err.strip().splitlines()) == 1, run.err


def test_gateway_only_for_envoy_gateway(cli):  # noqa: F811
    path = write_policy(scratch_dir("envoy-gateway"), "policy", STRICT)
    run = cli.run("render", "--config", path, "--target", "istio", "--gateway", "x", expect=2)
    assert "--gateway and --gateway-class are only for --target envoy-gateway" in run.err and len(run.err.strip().splitlines()) == 1


# --- the validator itself catches mistakes --------------------------------------------------


@pytest.fixture(scope="module")
def both(cli):  # noqa: F811
    _, wasm = render(cli, USE, *CASES["wasm-oci"][1])
    _, native = render(cli, STRICT, *CASES["native-strict"][1])
    return [d for d in yaml.safe_load_all(wasm.out) if d] + [d for d in yaml.safe_load_all(native.out) if d]


def _copy(documents: list[dict], kind: str, native: bool = False) -> dict:
    for document in documents:
        if document["kind"] == kind and (kind != "EnvoyExtensionPolicy" or ("dynamicModule" in document["spec"]) == native):
            return copy.deepcopy(document)
    raise AssertionError(kind)


def test_validator_catches_misspelled_fields(both, schemas):
    policy = _copy(both, "EnvoyExtensionPolicy")
    policy["spec"]["wasm"][0]["rootId"] = policy["spec"]["wasm"][0].pop("rootID")  # Go's casing is rootID
    assert any("rootId" in e for e in schemas.errors(policy))
    policy = _copy(both, "EnvoyExtensionPolicy", native=True)
    policy["spec"]["dynamicModules"] = policy["spec"].pop("dynamicModule")
    assert any("dynamicModules" in e for e in schemas.errors(policy))
    client = _copy(both, "ClientTrafficPolicy")
    client["spec"]["headers"]["withUnderscoreAction"] = client["spec"]["headers"].pop("withUnderscoresAction")
    assert any("withUnderscoreAction" in e for e in schemas.errors(client))
    gateway = _copy(both, "Gateway")
    gateway["spec"]["listeners"][0]["portNumber"] = gateway["spec"]["listeners"][0].pop("port")
    assert schemas.errors(gateway)
    proxy = _copy(both, "EnvoyProxy")
    proxy["spec"]["dynamicModules"][0]["source"]["file"] = proxy["spec"]["dynamicModules"][0]["source"].pop("local")
    assert any("file" in e for e in schemas.errors(proxy))


def test_validator_catches_bad_values(both, schemas):
    client = _copy(both, "ClientTrafficPolicy")
    client["spec"]["headers"]["withUnderscoresAction"] = "DROP_HEADER"  # Envoy's spelling
    assert any("DROP_HEADER" in e for e in schemas.errors(client))
    client = _copy(both, "ClientTrafficPolicy")
    client["spec"]["proxyProtocol"]["optional"] = "true"
    assert schemas.errors(client)
    policy = _copy(both, "EnvoyExtensionPolicy")
    policy["spec"]["wasm"][0]["code"]["type"] = "OCI"
    assert any("OCI" in e for e in schemas.errors(policy))
    policy = _copy(both, "EnvoyExtensionPolicy")
    policy["spec"]["wasm"][0]["code"]["image"]["sha256"] = "sha256:" + DIGEST
    assert any("sha256" in e for e in schemas.errors(policy))
    policy = _copy(both, "EnvoyExtensionPolicy", native=True)
    policy["spec"]["dynamicModule"][0]["name"] = "TrustIP"
    assert any("TrustIP" in e for e in schemas.errors(policy))
    # The hand-checked CEL rules.
    policy = _copy(both, "EnvoyExtensionPolicy")
    policy["spec"]["wasm"][0]["code"]["type"] = "HTTP"
    assert any("wasm code" in e for e in schemas.errors(policy))
    client = _copy(both, "ClientTrafficPolicy")
    client["spec"]["targetRefs"][0]["kind"] = "HTTPRoute"
    assert any("targetRefs" in e for e in schemas.errors(client))


def test_validator_catches_wrong_kind_or_version(both, schemas):
    policy = _copy(both, "EnvoyExtensionPolicy")
    policy["apiVersion"] = "gateway.envoyproxy.io/v1"
    assert schemas.errors(policy)
    gateway = _copy(both, "Gateway")
    gateway["kind"] = "Gateways"
    assert schemas.errors(gateway)


def test_schemas_are_the_documented_ones():
    source = (EG_CRDS / "SOURCE.md").read_text()
    names = sorted(p.name for p in EG_CRDS.glob("*.yaml"))
    assert names == [
        "gateway.envoyproxy.io_clienttrafficpolicies.yaml",
        "gateway.envoyproxy.io_envoyextensionpolicies.yaml",
        "gateway.envoyproxy.io_envoyproxies.yaml",
        "gateway.networking.k8s.io_gateways.yaml",
    ]
    for name in names:
        assert name in source
    assert sorted(EgSchemas().validators) == [
        ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"),
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"),
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"),
        ("gateway.networking.k8s.io/v1", "Gateway"),
        ("gateway.networking.k8s.io/v1beta1", "Gateway"),
    ]
