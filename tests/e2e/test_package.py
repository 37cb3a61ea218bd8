"""`trustip package` and `scripts/release` (issue 11): OCI images of trustip.wasm, proven against a
real registry.

A CNCF distribution registry (Debian's `docker-registry`) runs on loopback. `trustip package
--push` pushes both forms; `skopeo` (Debian) reads them back, and the module is extracted from
what skopeo copied with the rules of Istio's image fetcher (istio/istio pkg/wasm/imagefetcher.go;
Envoy Gateway's internal/wasm/imagefetcher.go is the same code), reimplemented below:

- a manifest whose last layer is `application/vnd.oci.image.layer.v1.tar+gzip` is the compat
  (Docker-image) form: gunzip, untar, the first entry whose base name is `plugin.wasm`;
- otherwise the manifest must have exactly two layers, one of them
  `application/vnd.module.wasm.content.layer.v1+wasm`, whose blob is the raw module.

The module's bytes and sha256 must equal target/trustip.wasm's, and the manifest digest the
registry serves (what a WasmPlugin's `sha256` / an `oci://...@sha256:` pin names) must be the one
`trustip package` printed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli_support import cli, native, scratch_dir  # noqa: F401  (fixtures)
from harness import net
from harness.envoy import REPO, WASM
from harness.registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
TAG = "e2e"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr.decode(errors='replace')}"
    return done


def istio_extract(manifest: dict, blob) -> bytes:
    """The module, by Istio's image fetcher's rules; `blob(digest)` returns a blob's bytes."""
    layers = manifest.get("layers") or []
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        assert layers and layers[-1]["mediaType"] == DOCKER_LAYER, "Docker image: last layer not a Docker layer"
        return _plugin_wasm(blob(layers[-1]["digest"]))
    if layers and layers[-1]["mediaType"] == OCI_LAYER:  # the compat variant
        return _plugin_wasm(blob(layers[-1]["digest"]))
    assert len(layers) == 2, f"oci variant: number of layers must be 2 but got {len(layers)}"
    wasm = [layer for layer in layers if layer["mediaType"] == WASM_LAYER]
    assert wasm, f"oci variant: could not find the layer of type {WASM_LAYER}"
    return blob(wasm[0]["digest"])


def _plugin_wasm(layer: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as archive:
        for member in archive:
            if posixpath.basename(member.name) == "plugin.wasm":
                return archive.extractfile(member).read()
    raise AssertionError("plugin.wasm not found in the archive")


def printed_digests(out: str, word: str) -> dict[str, str]:
    """{tag: digest} from `wrote DIR:TAG sha256:...` or `pushed REG/REPO@sha256:... (tag TAG, ...)`."""
    digests = {}
    for line in out.splitlines():
        if word == "wrote" and line.startswith("wrote "):
            ref, digest = line.split()[1:3]
            digests[ref.rsplit(":", 1)[1]] = digest
        elif word == "pushed" and line.startswith("pushed "):
            match = re.match(r"pushed \S+@(sha256:[0-9a-f]{64}) \(tag ([^,]+),", line)
            assert match, line
            digests[match.group(2)] = match.group(1)
    return digests


@pytest.fixture(scope="module")
def module_bytes() -> bytes:
    if not WASM.is_file():
        pytest.fail(f"{WASM} does not exist: run scripts/build-wasm (or set TRUSTIP_WASM)")
    return WASM.read_bytes()


@pytest.fixture(scope="module")
def registry():
    with Registry() as running:
        yield running


@pytest.fixture(scope="module")
def pushed(cli, registry, module_bytes):
    """Both forms packaged and pushed once: (the run, {tag: digest} as printed)."""
    layout = scratch_dir("package") / "layout"
    run = cli.run("package", "--wasm", WASM, "--out", layout, "--push", f"{registry.address}/trustip:{TAG}", "--insecure")
    digests = printed_digests(run.out, "pushed")
    assert set(digests) == {TAG, f"{TAG}-artifact"}, run
    # The layout holds the same manifests (tagged with the default tag there).
    assert sorted(digests.values()) == sorted(printed_digests(run.out, "wrote").values()), run
    return run, digests


def remote(registry: Registry, tag: str) -> str:
    return f"docker://{registry.address}/trustip:{tag}"


def test_layout_is_an_oci_layout_skopeo_reads(cli, module_bytes):
    layout = scratch_dir("package") / "layout"
    run = cli.run("package", "--wasm", WASM, "--out", layout, "--tag", "v9")
    digests = printed_digests(run.out, "wrote")
    assert set(digests) == {"v9", "v9-artifact"}, run
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for tag, digest in digests.items():
        raw = skopeo("inspect", "--raw", f"oci:{layout}:{tag}").stdout
        assert sha256(raw) == digest
        manifest = json.loads(raw)
        blob = lambda d: (layout / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()  # noqa: E731
        module = istio_extract(manifest, blob)
        assert sha256(module) == sha256(module_bytes) and module == module_bytes
    # The compat form is an ordinary image to image tools: skopeo reads its config.
    info = json.loads(skopeo("inspect", f"oci:{layout}:v9").stdout)
    assert (info["Digest"], info["Os"], info["Architecture"]) == (digests["v9"], "wasip1", "wasm")


def test_digests_are_reproducible(cli):
    first, second = scratch_dir("package") / "a", scratch_dir("package") / "b"
    runs = [cli.run("package", "--wasm", WASM, "--out", out) for out in (first, second)]
    assert printed_digests(runs[0].out, "wrote") == printed_digests(runs[1].out, "wrote")
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}  # noqa: E731
    assert files(first) == files(second)


def test_pushed_manifests_have_the_media_types_istio_reads(registry, pushed):
    _, digests = pushed
    compat = skopeo("inspect", "--raw", "--tls-verify=false", remote(registry, TAG)).stdout
    artifact = skopeo("inspect", "--raw", "--tls-verify=false", remote(registry, f"{TAG}-artifact")).stdout
    # The registry serves the bytes pushed: their sha256 is the digest printed (the pin).
    assert sha256(compat) == digests[TAG]
    assert sha256(artifact) == digests[f"{TAG}-artifact"]
    compat, artifact = json.loads(compat), json.loads(artifact)
    assert compat["mediaType"] == OCI_MANIFEST
    assert compat["config"]["mediaType"] == OCI_CONFIG
    assert [layer["mediaType"] for layer in compat["layers"]] == [OCI_LAYER]
    assert compat["annotations"] == {"module.wasm.image/variant": "compat"}
    assert artifact["mediaType"] == OCI_MANIFEST
    assert artifact["config"]["mediaType"] == WASM_CONFIG
    assert [layer["mediaType"] for layer in artifact["layers"]] == [WASM_CONFIG, WASM_LAYER]


@pytest.mark.parametrize("form,transport", [("compat", "dir"), ("compat", "oci"), ("artifact", "dir"), ("artifact", "oci")])
def test_module_read_back_from_the_registry(registry, pushed, module_bytes, form, transport):
    """skopeo copies the pushed image out of the registry (as a `dir:` or an `oci:` layout, the
    digests kept); the module extracted by Istio's rules is target/trustip.wasm, byte for byte."""
    _, digests = pushed
    tag = TAG if form == "compat" else f"{TAG}-artifact"
    dest = scratch_dir("pulled") / transport
    target = f"dir:{dest}" if transport == "dir" else f"oci:{dest}:{tag}"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", remote(registry, tag), target)
    if transport == "dir":
        raw = (dest / "manifest.json").read_bytes()
        blob = lambda d: (dest / d.removeprefix("sha256:")).read_bytes()  # noqa: E731
    else:
        index = json.loads((dest / "index.json").read_text())
        (entry,) = index["manifests"]
        blob = lambda d: (dest / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()  # noqa: E731
        raw = blob(entry["digest"])
    assert sha256(raw) == digests[tag]
    module = istio_extract(json.loads(raw), blob)
    assert len(module) == len(module_bytes)
    assert sha256(module) == sha256(module_bytes)
    assert module == module_bytes


def test_a_second_push_uploads_no_blob(cli, registry, pushed):
    """Blobs the registry has (HEAD 200) are not uploaded again; the manifests are re-tagged."""
    uploads = lambda: registry.output().count('"POST /v2/trustip/blobs/uploads/')  # noqa: E731
    before = uploads()
    assert before >= 3, registry.output()[-2000:]  # config, layer; runtime config, module
    run = cli.run("package", "--wasm", WASM, "--out", scratch_dir("package") / "again",
                  "--push", f"{registry.address}/trustip:{TAG}-again", "--insecure")  # fmt: skip
    assert set(printed_digests(run.out, "pushed").values()) == set(pushed[1].values())
    assert uploads() == before
    assert registry.output().count(f'"PUT /v2/trustip/manifests/{TAG}-again HTTP') == 1


def _one_line_error(run, *fragments: str) -> None:
    assert run.code == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustip: "), run
    for fragment in fragments:
        assert fragment in lines[0], run


def test_registry_down_is_one_line_and_exit_2(cli):
    port = net.free_port()
    run = cli.run("package", "--wasm", WASM, "--out", scratch_dir("package") / "down",
                  "--push", f"127.0.0.1:{port}/trustip:x", "--insecure", expect=None)  # fmt: skip
    _one_line_error(run, f"cannot push to 127.0.0.1:{port}/trustip")
    assert "pushed" not in run.out


def test_https_to_a_plain_http_registry_says_insecure(cli, registry):
    run = cli.run("package", "--wasm", WASM, "--out", scratch_dir("package") / "tls",
                  "--push", f"{registry.address}/trustip:tls", expect=None)  # fmt: skip
    _one_line_error(run, f"cannot push to {registry.address}/trustip", "add --insecure")


def test_bad_inputs_are_one_line_and_exit_2(cli):
    scratch = scratch_dir("package")
    not_wasm = scratch / "not.wasm"
    not_wasm.write_bytes(b"#!/bin/sh\n")
    _one_line_error(cli.run("package", "--wasm", not_wasm, "--out", scratch / "o", expect=None), "not a WebAssembly module")
    _one_line_error(cli.run("package", "--wasm", scratch / "missing.wasm", "--out", scratch / "o", expect=None), "cannot read")
    _one_line_error(cli.run("package", "--wasm", WASM, "--out", scratch / "o", "--push", "trustip:1", expect=None), "--push trustip:1")
    _one_line_error(cli.run("package", "--wasm", WASM, "--out", scratch / "o", "--tag", "a/b", expect=None), "--tag a/b")
    assert not (scratch / "o").exists()


def test_release_bundle_sums_verify(cli, native, module_bytes):
    """scripts/release --no-build on the artifacts already built: the files, the glibc floor
    objdump -T gives, the OCI layout, and SHA256SUMS that `sha256sum -c` verifies."""
    out = scratch_dir("release") / "bundle"
    env = dict(os.environ, TRUSTIP_CLI=str(cli.path), TRUSTIP_WASM=str(WASM), TRUSTIP_NATIVE=str(native))
    done = subprocess.run([str(REPO / "scripts" / "release"), "--no-build", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "trustip.wasm").read_bytes() == module_bytes
    assert (out / "libtrustip.so").read_bytes() == native.read_bytes()
    assert (out / "trustip").read_bytes() == cli.path.read_bytes()
    symbols = subprocess.run(["objdump", "-T", str(native)], capture_output=True, text=True, check=True).stdout
    floor = max(tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", symbols))
    assert (out / "libtrustip.so.glibc").read_text() == f"glibc {'.'.join(map(str, floor))}\n"
    listed = {line.split(maxsplit=1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == on_disk
    assert {"trustip.wasm", "libtrustip.so", "libtrustip.so.glibc", "trustip", "oci/index.json", "oci-digests.txt"} <= listed
    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # The layout in the bundle holds the module in both forms, at the digests it lists.
    digests = printed_digests((out / "oci-digests.txt").read_text(), "wrote")
    assert len(digests) == 2 and all(DIGEST.fullmatch(d) for d in digests.values())
    for tag, digest in digests.items():
        raw = skopeo("inspect", "--raw", f"oci:{out / 'oci'}:{tag}").stdout
        assert sha256(raw) == digest
    # A changed file is caught.
    with open(out / "trustip.wasm", "ab") as f:
        f.write(b"\0")
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, capture_output=True).returncode != 0


@pytest.mark.parametrize(
    "outdir, needle",
    [
        (str(REPO), "it would delete sources or build artifacts"),
        (str(REPO / "target"), "it would delete sources or build artifacts"),
        (str(REPO / "src"), "it would delete sources or build artifacts"),
        (str(REPO.parent), "it holds the repository or the target directory"),
        (".", "it would delete sources or build artifacts"),
    ],
)
def test_release_refuses_an_outdir_it_would_wreck(outdir, needle):
    """OUTDIR is deleted first: the repository, its parents, the target directory and the sources
    are refused before anything is touched (a relative OUTDIR is the caller's, here the repo)."""
    marker = REPO / "Cargo.toml"
    run = subprocess.run(
        [str(REPO / "scripts" / "release"), "--no-build", outdir], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run
    assert needle in run.stderr, run.stderr
    assert marker.is_file()
