//! `trustip package`: OCI images of trustip.wasm, without Docker. Writes both forms Istio's
//! WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy pull (see image.rs) to an OCI image
//! layout and, with `--push`, to a registry. docs/packaging.md describes the forms and naming.

mod image;
mod push;

use std::fs;
use std::path::PathBuf;

use clap::Args;

use crate::error::CliError;
use image::{Form, ARTIFACT_SUFFIX};

/// Build OCI images of the wasm module (Docker-image and wasm-artifact forms), write them to an
/// OCI layout directory and optionally push them to a registry.
#[derive(Args)]
pub struct PackageArgs {
    /// The wasm module (scripts/build-wasm writes target/trustip.wasm).
    #[arg(long, value_name = "FILE", default_value = "target/trustip.wasm")]
    wasm: PathBuf,
    /// The OCI image layout directory to write (created if missing; its index.json is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The layout's tag of the Docker-image form; the wasm-artifact form is TAG-artifact.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Also push both forms to REGISTRY/REPOSITORY[:TAG] (TAG and TAG-artifact; without :TAG,
    /// --tag's), and print each pinned reference.
    #[arg(long, value_name = "REGISTRY/REPOSITORY[:TAG]")]
    push: Option<String>,
    /// Talk to the registry over plain HTTP instead of HTTPS.
    #[arg(long, requires = "push")]
    insecure: bool,
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, room left for the `-artifact` suffix.
fn tag_ok(tag: &str) -> bool {
    let first_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() + ARTIFACT_SUFFIX.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub fn run(args: &PackageArgs) -> Result<u8, CliError> {
    if !tag_ok(&args.tag) {
        return Err(CliError::Usage(format!(
            "--tag {}: a tag is letters, digits, '.', '_', '-' (not first), at most {} characters",
            args.tag,
            128 - ARTIFACT_SUFFIX.len()
        )));
    }
    let reference = args
        .push
        .as_deref()
        .map(push::Reference::parse)
        .transpose()
        .map_err(CliError::Usage)?;
    let module = fs::read(&args.wasm).map_err(|source| CliError::Read {
        path: args.wasm.display().to_string(),
        source,
    })?;
    if !module.starts_with(b"\0asm") {
        return Err(CliError::Usage(format!(
            "{} is not a WebAssembly module (no \\0asm header)",
            args.wasm.display()
        )));
    }
    let images = image::images(&module, &args.tag)?;
    image::write_layout(&args.out, &images)?;
    println!(
        "module {} {} ({} bytes)",
        args.wasm.display(),
        image::sha256_digest(&module),
        module.len()
    );
    for image in &images {
        println!(
            "wrote {}:{} {} ({})",
            args.out.display(),
            image.tag,
            image.manifest.digest,
            image.form.describe()
        );
    }
    if let Some(reference) = reference {
        let base_tag = reference.tag.clone().unwrap_or_else(|| args.tag.clone());
        let registry = push::Registry::new(reference, args.insecure);
        for image in &images {
            let tag = match image.form {
                Form::Compat => base_tag.clone(),
                Form::Artifact => format!("{base_tag}{ARTIFACT_SUFFIX}"),
            };
            let digest = registry.push(image, &tag)?;
            println!(
                "pushed {}@{digest} (tag {tag}, {})",
                registry.name(),
                image.form.describe()
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::tag_ok;

    #[test]
    fn tags() {
        for good in ["0.1.0", "v1", "_x", "a-b.c_D", &"x".repeat(119)] {
            assert!(tag_ok(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", "a@b", &"x".repeat(120)] {
            assert!(!tag_ok(bad), "{bad}");
        }
    }
}
