"""Binary TLVs kept intact: with `value_string_encoding: BASE64` on Envoy's proxy_protocol rules
and `"tlv_encoding": "base64"` in the policy, Azure and GCP ids whose bytes are not UTF-8 reach
trustip unaltered (with Envoy's default encoding they do not: see test_tlv.py's expected
failures). A policy that disagrees with Envoy about the encoding fails closed."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener
from harness.expect import decisions

VPCE = "vpce-0a1b2c3d4e5f60718"
GCP_PSC = 1234567890123456789  # big-endian bytes 11 22 10 f4 7d e9 81 15: not UTF-8
AZURE_LINK = 0x9ABCDEF0  # little-endian bytes f0 de bc 9a: not UTF-8

PLUGIN = {
    "tlv_encoding": "base64",
    "rules": [
        {"from": ["127.0.0.21/32"], "proxy_protocol": "require", "tlvs": {"azure_link_id": [str(AZURE_LINK)]}},
        {"from": ["127.0.0.22/32"], "proxy_protocol": "require", "tlvs": {"gcp_psc_connection_id": [str(GCP_PSC)]}},
        {"from": ["127.0.0.20/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE]}},
        {"from": ["127.0.0.24/32"], "proxy_protocol": "use"},
    ],
    "headers": {
        "tlv": {
            "aws_vpce_id": "x-amzn-vpce-id",
            "azure_link_id": "x-azure-link-id",
            "gcp_psc_connection_id": "x-gcp-psc-connection-id",
        }
    },
}
SRC = ("198.51.100.77", "10.0.0.1", 40000, 443)


def pp(*tlvs: bytes) -> bytes:
    return client.proxy_v2(*SRC, tlvs=list(tlvs))


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="http", plugin=PLUGIN, tlv_value_encoding="BASE64"),
        # The same policy against Envoy's default encoding: values are not base64.
        Listener(name="mismatch", plugin=PLUGIN),
    )


@pytest.mark.parametrize(
    "peer,header,status",
    [
        pytest.param("127.0.0.21", pp(client.azure_link_tlv(AZURE_LINK)), 200, id="azure-allowed"),
        pytest.param("127.0.0.21", pp(client.azure_link_tlv(AZURE_LINK + 1)), 403, id="azure-unlisted"),
        pytest.param("127.0.0.22", pp(client.gcp_psc_tlv(GCP_PSC)), 200, id="gcp-allowed"),
        pytest.param("127.0.0.22", pp(client.gcp_psc_tlv(GCP_PSC - 1)), 403, id="gcp-unlisted"),
        pytest.param("127.0.0.20", pp(client.aws_vpce_tlv(VPCE)), 200, id="aws-allowed"),
        pytest.param("127.0.0.20", pp(), 403, id="aws-missing"),
    ],
)
def test_allow_lists_on_binary_values(envoy, peer, header, status):
    response = client.request(envoy.port("http"), source=peer, proxy=header)
    assert response.status == status, response


def test_mapped_headers_carry_the_exact_values(envoy):
    header = pp(client.gcp_psc_tlv(GCP_PSC), client.azure_link_tlv(AZURE_LINK), client.aws_vpce_tlv(VPCE))
    response = client.request(envoy.port("http"), source="127.0.0.24", proxy=header)
    assert response.status == 200, response
    assert response.upstream_header("x-gcp-psc-connection-id") == str(GCP_PSC)
    assert response.upstream_header("x-azure-link-id") == str(AZURE_LINK)
    assert response.upstream_header("x-amzn-vpce-id") == VPCE


def test_encoding_mismatch_fails_closed(envoy, counters):
    watch = counters(envoy)
    response = client.request(envoy.port("mismatch"), source="127.0.0.22", proxy=pp(client.gcp_psc_tlv(GCP_PSC)))
    assert response.status == 403, response
    assert decisions(watch.delta()) == {"trustip.http.reject_tlv": 1}
