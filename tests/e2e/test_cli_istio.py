"""`trustip render --target istio` validates against Istio's published CRD schemas (issue 3).

Every rendered document's kind and apiVersion must be a kind, group and served version of a CRD
in tests/data/istio/ (see SOURCE.md there), and its `spec` must validate against that version's
`openAPIV3Schema.properties.spec`. Objects that declare `properties` are closed (as
`kubectl apply --validate=strict` treats them) unless they carry
`x-kubernetes-preserve-unknown-fields`, so a misspelled field fails. The CEL rules
(`x-kubernetes-validations`) are not evaluated here. Negative tests prove the validator catches a
misspelled field and a bad enum value. No cluster needed."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from cli_support import ISTIO_CRDS, CrdSchemas, cli, scratch_dir, write_policy  # noqa: F401  (cli is a fixture)

POLICY = {
    "rules": [
        {"from": ["10.0.0.0/8"], "proxy_protocol": "require"},
        {"from": ["192.168.0.0/16"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f"]}},
    ],
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}},
}
ANNOTATION = """proxy.istio.io/config: '{"gatewayTopology":{"proxyProtocol":{}}}'"""


@pytest.fixture(scope="module")
def schemas() -> CrdSchemas:
    """The CRDs in tests/data/istio."""
    return CrdSchemas(ISTIO_CRDS)


def render_istio(cli, *extra: str) -> tuple[str, list[dict]]:  # noqa: F811
    policy = write_policy(scratch_dir("istio"), "policy", POLICY)
    text = cli.run("render", "--config", policy, "--target", "istio", *extra).out
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        numbered = "\n".join(f"{i + 1:4} {line}" for i, line in enumerate(text.splitlines()))
        pytest.fail(f"`trustip render --target istio` printed YAML that does not parse: {error}\n{numbered}")
    return text, documents


DIGEST = "4c1f0a9e5b7d2c3e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
IMAGES = {
    # --image with --image-digest: the url as given, the digest as sha256.
    "oci-image": ("oci://ghcr.io/example/trustip:0.1.0", ["--image-digest", f"sha256:{DIGEST}"]),
    # A reference pinned by digest: the same.
    "oci-pinned": (f"oci://ghcr.io/example/trustip@sha256:{DIGEST}", []),
    # An https url, pinned by the module's own sha256.
    "https-pinned": ("https://example.com/trustip.wasm", ["--image-digest", f"sha256:{DIGEST}"]),
    # A pinned reference written with an uppercase digest: the url gets it lowercase.
    "oci-pinned-upper": (f"oci://ghcr.io/example/trustip@sha256:{DIGEST.upper()}", []),
}


@pytest.fixture(scope="module", params=["wasm-file", *IMAGES])
def rendered(request, cli, wasm):  # noqa: F811
    if request.param == "wasm-file":
        return render_istio(cli, "--wasm", str(wasm))
    image, extra = IMAGES[request.param]
    return render_istio(cli, "--image", image, *extra, "--namespace", "gateways", "--gateway-label", "app=edge")


def test_every_document_validates(rendered, schemas):
    _, documents = rendered
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("WasmPlugin", "trustip-network"),
        ("WasmPlugin", "trustip-http"),
        ("EnvoyFilter", "trustip-wiring"),
    ]
    for document in documents:
        assert schemas.errors(document) == [], document


def test_wasm_plugins_as_promised(rendered):
    text, documents = rendered
    plugins = [d for d in documents if d["kind"] == "WasmPlugin"]
    assert {(p["spec"]["type"], p["spec"]["pluginName"]) for p in plugins} == {
        ("NETWORK", "trustip-network"),
        ("HTTP", "trustip-http"),
    }
    for plugin in plugins:
        spec = plugin["spec"]
        assert spec["failStrategy"] == "FAIL_CLOSE"
        assert spec["pluginConfig"] == POLICY
        assert spec["selector"]["matchLabels"]
        if spec["url"].startswith("file://"):
            assert len(spec["sha256"]) == 64
            assert "imagePullPolicy" not in spec
        elif spec["url"].startswith("oci://"):
            # Istio compares sha256 with the image's manifest digest; pinned, it pulls
            # IfNotPresent whatever the policy says, so render writes that.
            assert spec["url"] in {image for image, _ in IMAGES.values() if image == image.lower()}
            assert spec["sha256"] == DIGEST
            assert spec["imagePullPolicy"] == "IfNotPresent"
        else:
            assert spec["sha256"] == DIGEST
            assert spec["imagePullPolicy"] == "IfNotPresent"
    # The gateway must parse PROXY: the Deployment annotation is spelled out for the operator.
    assert ANNOTATION in text


def test_envoy_filter_wiring(rendered):
    _, documents = rendered
    (envoy_filter,) = [d for d in documents if d["kind"] == "EnvoyFilter"]
    patches = envoy_filter["spec"]["configPatches"]
    set_filter_state = patches[0]["patch"]["value"]
    assert set_filter_state["name"] == "envoy.filters.network.set_filter_state"
    assert patches[0]["patch"]["operation"] == "INSERT_FIRST"
    proxy_protocol = patches[1]["patch"]["value"]["typed_config"]
    assert proxy_protocol["tlv_location"] == "FILTER_STATE"
    assert proxy_protocol["rules"] == [{"tlv_type": 234, "on_tlv_present": {"key": "aws_vpce_id"}}]
    hcm = patches[2]["patch"]["value"]["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["skip_xff_append"] is True
    # Underscored look-alikes (x_forwarded_for, x_real_ip) never reach trustip or the upstream.
    assert hcm["common_http_protocol_options"] == {"headers_with_underscores_action": "DROP_HEADER"}
    assert patches[2]["patch"]["operation"] == "MERGE"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--image", "oci://ghcr.io/example/trustip:0.1.0"], "pin the image: add --image-digest"),
        (["--image", "oci://ghcr.io/example/trustip:0.1.0", "--image-digest", "sha256:abc"], "64 hex digits"),
        (["--image", f"oci://ghcr.io/example/trustip@sha256:{DIGEST}", "--image-digest", "0" * 64], "differs from the digest"),
        (["--image", "oci://ghcr.io/example/trustip:0.1.0", "--image-digest", DIGEST, "--image-pull-policy", "Always"], "pinned by its sha256"),
        (["--image", "file:///tmp/trustip.wasm"], "use --wasm PATH"),
        (["--image", "https://example.com/trustip.wasm"], "pin the module: add --image-digest"),
        (["--image", "http://example.com/trustip.wasm", "--image-pull-policy", "Always"], "pin the module"),
    ],
)
def test_image_usage_errors(cli, extra, needle):  # noqa: F811
    policy = write_policy(scratch_dir("istio"), "policy", POLICY)
    run = cli.run("render", "--config", policy, "--target", "istio", *extra, expect=2)
    assert run.out == "" and needle in run.err, run.err
    assert len(run.err.strip().splitlines()) == 1, run.err


def test_validator_catches_bad_pull_policy(rendered, schemas):
    _, documents = rendered
    plugin = _first(documents, "WasmPlugin")
    plugin["spec"]["imagePullPolicy"] = "IF_NOT_PRESENT"
    assert any("IF_NOT_PRESENT" in e for e in schemas.errors(plugin))


# --- the validator itself catches mistakes --------------------------------------------------


def _first(documents: list[dict], kind: str) -> dict:
    return copy.deepcopy(next(d for d in documents if d["kind"] == kind))


def test_validator_catches_misspelled_field(rendered, schemas):
    _, documents = rendered
    plugin = _first(documents, "WasmPlugin")
    plugin["spec"]["failStrategey"] = plugin["spec"].pop("failStrategy")
    assert any("failStrategey" in e for e in schemas.errors(plugin))
    # Nested, inside a closed object of the EnvoyFilter.
    envoy_filter = _first(documents, "EnvoyFilter")
    envoy_filter["spec"]["configPatches"][0]["match"]["contxt"] = envoy_filter["spec"]["configPatches"][0]["match"].pop("context")
    assert any("contxt" in e for e in schemas.errors(envoy_filter))


def test_validator_catches_bad_enum(rendered, schemas):
    _, documents = rendered
    plugin = _first(documents, "WasmPlugin")
    plugin["spec"]["failStrategy"] = "FAIL_CLOSED"  # Envoy's spelling, not Istio's
    assert any("FAIL_CLOSED" in e for e in schemas.errors(plugin))
    plugin = _first(documents, "WasmPlugin")
    plugin["spec"]["type"] = "TCP"
    assert any("TCP" in e for e in schemas.errors(plugin))
    envoy_filter = _first(documents, "EnvoyFilter")
    envoy_filter["spec"]["configPatches"][0]["applyTo"] = "NETWORK_FILTERS"
    assert any("NETWORK_FILTERS" in e for e in schemas.errors(envoy_filter))


def test_validator_catches_wrong_kind_or_version(rendered, schemas):
    _, documents = rendered
    plugin = _first(documents, "WasmPlugin")
    plugin["apiVersion"] = "extensions.istio.io/v1beta7"
    assert schemas.errors(plugin)
    envoy_filter = _first(documents, "EnvoyFilter")
    envoy_filter["kind"] = "EnvoyFilters"
    assert schemas.errors(envoy_filter)


def test_preserved_fields_stay_open(rendered, schemas):
    """pluginConfig and a patch's value are free-form in the schema: anything goes there."""
    _, documents = rendered
    plugin = _first(documents, "WasmPlugin")
    plugin["spec"]["pluginConfig"] = {"anything": [1, {"nested": True}]}
    assert schemas.errors(plugin) == []


def test_schemas_are_the_documented_ones():
    source = (ISTIO_CRDS / "SOURCE.md").read_text()
    names = sorted(p.name for p in ISTIO_CRDS.glob("*.yaml"))
    assert names == ["envoyfilters.networking.istio.io.yaml", "wasmplugins.extensions.istio.io.yaml"]
    for name in names:
        assert name in source
    assert json.dumps(sorted(CrdSchemas(ISTIO_CRDS).validators)) == json.dumps(
        [["extensions.istio.io/v1alpha1", "WasmPlugin"], ["networking.istio.io/v1alpha3", "EnvoyFilter"]]
    )
