//! The two OCI images of a wasm module that Istio's WasmPlugin and Envoy Gateway's
//! EnvoyExtensionPolicy pull (both use Istio's image fetcher, pkg/wasm/imagefetcher.go), and the
//! OCI image layout they are written to.
//!
//! - The Docker-image form ("compat" in the Wasm image spec): an OCI image manifest with one
//!   `application/vnd.oci.image.layer.v1.tar+gzip` layer whose tar holds `plugin.wasm`, an
//!   ordinary image config (`os: wasip1`, `architecture: wasm`) and the annotation
//!   `module.wasm.image/variant: compat`. Any registry and image tool handles it.
//! - The wasm-artifact form ("oci" variant): the manifest's config and first layer are the
//!   runtime config (`application/vnd.module.wasm.config.v1+json`), the second layer is the raw
//!   module (`application/vnd.module.wasm.content.layer.v1+wasm`). The fetcher requires exactly
//!   these two layers.
//!
//! Every byte is fixed by the module: the tar entry has mtime 0, uid/gid 0, mode 0644 and no
//! user names, gzip's header has no time or name, JSON keys are sorted and nothing records when
//! or where the image was built. The same module gives the same digests.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::CliError;
use trustip::core::names;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The file the compat form's layer must hold (Istio: `filepath.Base(name) == "plugin.wasm"`).
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// The tag suffix of the wasm-artifact form (the compat form has the plain tag).
pub const ARTIFACT_SUFFIX: &str = "-artifact";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const TITLE: &str = "org.opencontainers.image.title";

/// Content-addressed bytes.
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = sha256_digest(&bytes);
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    fn descriptor(&self, title: Option<&str>) -> Value {
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        });
        if let (Some(title), Some(object)) = (title, descriptor.as_object_mut()) {
            object.insert("annotations".into(), json!({ TITLE: title }));
        }
        descriptor
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// The Docker-image ("compat") form: plugin.wasm in a tar+gzip layer.
    Compat,
    /// The OCI wasm-artifact form: the raw module as a `+wasm` layer.
    Artifact,
}

impl Form {
    pub fn describe(self) -> &'static str {
        match self {
            Form::Compat => "Docker-image form: plugin.wasm in a tar+gzip layer",
            Form::Artifact => {
                "wasm-artifact form: application/vnd.module.wasm.content.layer.v1+wasm"
            }
        }
    }
}

/// One image: its manifest and the blobs the manifest names (config first, then layers).
pub struct Image {
    pub form: Form,
    pub tag: String,
    pub manifest: Blob,
    pub blobs: Vec<Blob>,
}

/// Both forms of `module`, tagged `tag` (compat) and `tag-artifact`.
pub fn images(module: &[u8], tag: &str) -> Result<Vec<Image>, CliError> {
    Ok(vec![
        compat(module, tag)?,
        artifact(module, &format!("{tag}{ARTIFACT_SUFFIX}"))?,
    ])
}

fn json_bytes(value: &Value) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(value)
        .map_err(|err| CliError::Usage(format!("package: cannot encode JSON: {err}")))
}

/// A tar with the single entry `plugin.wasm`, every variable field fixed.
pub fn layer_tar(module: &[u8]) -> Result<Vec<u8>, CliError> {
    let failed =
        |err: std::io::Error| CliError::Usage(format!("package: cannot build the layer: {err}"));
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE).map_err(failed)?;
    header.set_size(module.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append(&header, module).map_err(failed)?;
    builder.into_inner().map_err(failed)
}

/// gzip with no name and mtime 0 in its header (flate2's GzBuilder default).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, CliError> {
    let failed =
        |err: std::io::Error| CliError::Usage(format!("package: cannot compress the layer: {err}"));
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).map_err(failed)?;
    encoder.finish().map_err(failed)
}

fn compat(module: &[u8], tag: &str) -> Result<Image, CliError> {
    let tar = layer_tar(module)?;
    let diff_id = sha256_digest(&tar);
    let layer = Blob::new(OCI_LAYER_TAR_GZIP, gzip(&tar)?);
    let config = Blob::new(
        OCI_CONFIG,
        json_bytes(&json!({
            "architecture": "wasm",
            "os": "wasip1",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))?,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(None),
        "layers": [layer.descriptor(None)],
        "annotations": { "module.wasm.image/variant": "compat" },
    });
    Ok(Image {
        form: Form::Compat,
        tag: tag.to_string(),
        manifest: Blob::new(OCI_MANIFEST, json_bytes(&manifest)?),
        blobs: vec![config, layer],
    })
}

fn artifact(module: &[u8], tag: &str) -> Result<Image, CliError> {
    // The runtime config of the Wasm artifact spec (type envoy_proxy, the module's root ids).
    let runtime_config = Blob::new(
        WASM_CONFIG,
        json_bytes(&json!({
            "type": "envoy_proxy",
            "config": { "root_ids": [names::NETWORK_ROOT_ID, names::HTTP_ROOT_ID] },
        }))?,
    );
    let layer = Blob::new(WASM_LAYER, module.to_vec());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": runtime_config.descriptor(None),
        "layers": [
            runtime_config.descriptor(Some("runtime-config.json")),
            layer.descriptor(Some(PLUGIN_FILE)),
        ],
    });
    Ok(Image {
        form: Form::Artifact,
        tag: tag.to_string(),
        manifest: Blob::new(OCI_MANIFEST, json_bytes(&manifest)?),
        blobs: vec![runtime_config, layer],
    })
}

/// Writes `images` as an OCI image layout in `dir`: `oci-layout`, `blobs/sha256/<hex>` and an
/// `index.json` naming each manifest by its tag (`org.opencontainers.image.ref.name`). An
/// existing index.json is replaced; blobs already there stay.
pub fn write_layout(dir: &Path, images: &[Image]) -> Result<(), CliError> {
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| CliError::Write { path, source }
    };
    let blobs_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(write_err(&blobs_dir))?;
    let mut manifests = Vec::new();
    for image in images {
        for blob in image.blobs.iter().chain(std::iter::once(&image.manifest)) {
            let hex = blob.digest.trim_start_matches("sha256:");
            let path = blobs_dir.join(hex);
            fs::write(&path, &blob.bytes).map_err(write_err(&path))?;
        }
        let mut descriptor = image.manifest.descriptor(None);
        if let Some(object) = descriptor.as_object_mut() {
            object.insert("annotations".into(), json!({ REF_NAME: image.tag }));
        }
        manifests.push(descriptor);
    }
    let layout = dir.join("oci-layout");
    fs::write(
        &layout,
        json_bytes(&json!({ "imageLayoutVersion": "1.0.0" }))?,
    )
    .map_err(write_err(&layout))?;
    let index = dir.join("index.json");
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    fs::write(&index, json_bytes(&body)?).map_err(write_err(&index))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 a module";

    fn manifest(image: &Image) -> Value {
        serde_json::from_slice(&image.manifest.bytes).unwrap_or(Value::Null)
    }

    #[test]
    fn the_same_module_gives_the_same_digests() {
        let digests = |module: &[u8]| -> Vec<String> {
            images(module, "1")
                .map(|i| i.into_iter().map(|i| i.manifest.digest).collect())
                .unwrap_or_default()
        };
        assert_eq!(digests(MODULE).len(), 2);
        assert_eq!(digests(MODULE), digests(MODULE));
        assert_ne!(digests(MODULE), digests(b"\0asm\x01\0\0\0 another"));
    }

    #[test]
    fn the_compat_layer_holds_plugin_wasm_only() -> Result<(), Box<dyn std::error::Error>> {
        let images = images(MODULE, "v1")?;
        let compat = images.first().ok_or("no image")?;
        assert_eq!((compat.form, compat.tag.as_str()), (Form::Compat, "v1"));
        let m = manifest(compat);
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(1));
        assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_TAR_GZIP);
        assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
        let layer = compat.blobs.get(1).ok_or("no layer")?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&layer.bytes[..]));
        let mut entries = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)?;
            let header = entry.header();
            assert_eq!(
                (header.mtime()?, header.uid()?, header.mode()?),
                (0, 0, 0o644)
            );
            entries.push((entry.path()?.display().to_string(), bytes));
        }
        assert_eq!(entries, vec![(PLUGIN_FILE.to_string(), MODULE.to_vec())]);
        Ok(())
    }

    #[test]
    fn the_artifact_has_the_runtime_config_and_the_raw_module(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let images = images(MODULE, "v1")?;
        let artifact = images.get(1).ok_or("no image")?;
        assert_eq!(
            (artifact.form, artifact.tag.as_str()),
            (Form::Artifact, "v1-artifact")
        );
        let m = manifest(artifact);
        assert_eq!(m["config"]["mediaType"], WASM_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], WASM_CONFIG);
        assert_eq!(m["layers"][1]["mediaType"], WASM_LAYER);
        assert_eq!(m["layers"][1]["digest"], sha256_digest(MODULE));
        assert_eq!(
            artifact.blobs.get(1).map(|b| b.bytes.as_slice()),
            Some(MODULE)
        );
        Ok(())
    }
}
