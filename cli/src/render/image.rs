//! `--image`, `--image-digest` and `--image-pull-policy`: where a cluster fetches trustip.wasm
//! from, pinned.
//!
//! For an OCI image the `sha256` Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy
//! take is the image's digest (the sha256 of its manifest, what `skopeo inspect`, `crane
//! digest` or `docker buildx imagetools inspect` print), not the module file's hash: both
//! fetchers compare it with the digest the registry reports for the reference before pulling
//! the layer. For an http(s) url it is the sha256 of the module file itself.

use crate::error::CliError;

/// `--image-pull-policy`, spelled as Istio spells it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum PullPolicy {
    /// Use a cached module when there is one (with a pinned digest the only policy Istio
    /// applies).
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    /// Pull again whenever the resource changes (for a mutable tag; not with a pinned digest).
    #[value(name = "Always")]
    Always,
}

impl PullPolicy {
    pub fn name(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
        }
    }
}

/// Where the module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// An OCI image: `reference` without the `oci://` scheme, as given (tag and/or digest);
    /// `digest`: the image's manifest digest, 64 lowercase hex digits.
    Oci { reference: String, digest: String },
    /// An http(s) url of the module file; `sha256`: the file's, when given.
    Http { url: String, sha256: Option<String> },
}

impl Image {
    /// The url Istio takes: `oci://` and the reference, or the http(s) url.
    pub fn istio_url(&self) -> String {
        match self {
            Image::Oci { reference, .. } => format!("oci://{reference}"),
            Image::Http { url, .. } => url.clone(),
        }
    }

    pub fn sha256(&self) -> Option<&str> {
        match self {
            Image::Oci { digest, .. } => Some(digest),
            Image::Http { sha256, .. } => sha256.as_deref(),
        }
    }
}

fn usage(text: String) -> CliError {
    CliError::Usage(text)
}

/// 64 hex digits, after an optional `sha256:`; lowercased.
fn parse_digest(flag: &str, text: &str) -> Result<String, CliError> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!(
            "{flag} {text:?}: expected sha256: and 64 hex digits (sha256:4c1f...)"
        )));
    }
    Ok(hex.to_ascii_lowercase())
}

/// `--image` with `--image-digest`: an OCI reference must be pinned (by `@sha256:` or the
/// digest option, the same digest if both); an http(s) url may carry the file's sha256.
pub fn parse(image: &str, digest: Option<&str>) -> Result<Image, CliError> {
    let given = digest
        .map(|d| parse_digest("--image-digest", d))
        .transpose()?;
    if let Some(reference) = image.strip_prefix("oci://") {
        if reference.is_empty()
            || reference.starts_with('/')
            || !reference.contains('/')
            || reference.bytes().any(|b| !b.is_ascii_graphic())
        {
            return Err(usage(format!(
                "--image {image:?}: expected oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
            )));
        }
        let pinned = match reference.split_once('@') {
            Some((_, suffix)) => Some(parse_digest("--image", suffix)?),
            None => None,
        };
        let digest = match (pinned, given) {
            (Some(pinned), Some(given)) if pinned != given => {
                return Err(usage(format!(
                    "--image-digest sha256:{given} differs from the digest in --image {image}: give one of them"
                )))
            }
            (Some(digest), _) | (None, Some(digest)) => digest,
            (None, None) => {
                return Err(usage(format!(
                    "--image {image}: pin the image: add --image-digest sha256:<64 hex> (the image's manifest digest, as `skopeo inspect --format '{{{{.Digest}}}}' docker://...` or `crane digest` prints it) or give oci://REGISTRY/REPOSITORY@sha256:<64 hex>; a tag alone can be moved to another module"
                )))
            }
        };
        // Image references take lowercase hex digests only.
        let reference = match reference.split_once('@') {
            Some((name, suffix)) => format!("{name}@{}", suffix.to_ascii_lowercase()),
            None => reference.to_string(),
        };
        return Ok(Image::Oci { reference, digest });
    }
    if image.starts_with("https://") || image.starts_with("http://") {
        if image.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(usage(format!("--image {image:?}: not a url")));
        }
        // A module fetched by URL runs unchecked without its sha256.
        if given.is_none() {
            return Err(usage(format!(
                "--image {image}: pin the module: add --image-digest sha256:<64 hex> (`sha256sum trustip.wasm`); without it Istio loads whatever the URL serves"
            )));
        }
        return Ok(Image::Http {
            url: image.to_string(),
            sha256: given,
        });
    }
    Err(usage(format!(
        "--image {image:?}: expected oci://REGISTRY/REPOSITORY:TAG (with --image-digest) or an http(s) url of trustip.wasm; for a local file use --wasm PATH"
    )))
}

/// The pull policy to write for `image`: `Always` is refused for a pinned module (Istio pulls a
/// module with a sha256 IfNotPresent whatever the field says, and a digest never changes).
pub fn pull_policy(image: &Image, asked: Option<PullPolicy>) -> Result<PullPolicy, CliError> {
    match asked {
        Some(PullPolicy::Always) if image.sha256().is_some() => Err(usage(
            "--image-pull-policy Always: the module is pinned by its sha256, which Istio and Envoy Gateway pull IfNotPresent whatever the policy says (a digest names one module forever); to roll out a new module, render again with its digest"
                .to_string(),
        )),
        Some(policy) => Ok(policy),
        None => Ok(PullPolicy::IfNotPresent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "4c1f0a9e5b7d2c3e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";

    fn err(result: Result<Image, CliError>) -> String {
        let text = result.unwrap_err().to_string();
        assert!(!text.contains('\n'), "{text}");
        text
    }

    #[test]
    fn oci_needs_a_digest() {
        let text = err(parse("oci://ghcr.io/example/trustip:0.1.0", None));
        assert!(text.contains("pin the image"), "{text}");
        let image = parse(
            "oci://ghcr.io/example/trustip:0.1.0",
            Some(&format!("sha256:{D}")),
        )
        .unwrap();
        assert_eq!(
            image,
            Image::Oci {
                reference: "ghcr.io/example/trustip:0.1.0".into(),
                digest: D.into()
            }
        );
        assert_eq!(image.istio_url(), "oci://ghcr.io/example/trustip:0.1.0");
        let pinned = parse(&format!("oci://ghcr.io/example/trustip@sha256:{D}"), None).unwrap();
        assert_eq!(pinned.sha256(), Some(D));
        // The same digest twice is fine, two different ones are not; uppercase is lowered.
        parse(
            &format!("oci://ghcr.io/example/trustip@sha256:{D}"),
            Some(&D.to_ascii_uppercase()),
        )
        .unwrap();
        let other = D.replace('4', "5");
        let text = err(parse(
            &format!("oci://ghcr.io/example/trustip@sha256:{D}"),
            Some(&format!("sha256:{other}")),
        ));
        assert!(text.contains("differs"), "{text}");
        for bad in ["sha256:abc", "md5:00", &format!("sha256:{D}0")] {
            let text = err(parse("oci://r.io/t:1", Some(bad)));
            assert!(text.contains("64 hex digits"), "{text}");
        }
        for bad in ["oci://", "oci://trustip", "oci:///x/y", "oci://r.io/a b"] {
            let text = err(parse(bad, Some(D)));
            assert!(text.contains("expected oci://"), "{bad}: {text}");
        }
    }

    #[test]
    fn http_and_others() {
        // A module url must be pinned (Istio would load whatever it serves).
        let text = err(parse("https://example.com/trustip.wasm", None));
        assert!(text.contains("pin the module"), "{text}");
        let image = parse("https://example.com/trustip.wasm", Some(D)).unwrap();
        assert_eq!(image.sha256(), Some(D));
        let text = err(parse("file:///tmp/trustip.wasm", None));
        assert!(text.contains("--wasm PATH"), "{text}");
    }

    #[test]
    fn pull_policy_with_a_digest() {
        let pinned = parse("oci://r.io/t:1", Some(D)).unwrap();
        assert_eq!(
            pull_policy(&pinned, None).unwrap(),
            PullPolicy::IfNotPresent
        );
        assert!(pull_policy(&pinned, Some(PullPolicy::Always)).is_err());
        let url = parse("https://example.com/trustip.wasm", Some(D)).unwrap();
        assert!(pull_policy(&url, Some(PullPolicy::Always)).is_err());
    }
}
