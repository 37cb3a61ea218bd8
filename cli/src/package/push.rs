//! Pushing images with the OCI distribution API: for each blob `HEAD` (skip it when the registry
//! has it), else `POST /v2/<repo>/blobs/uploads/` and `PUT <location>?digest=...` with the whole
//! blob (monolithic upload); then `PUT /v2/<repo>/manifests/<tag>`. Anonymous access only.

use std::time::Duration;

use super::image::{Blob, Image};
use crate::error::CliError;

/// `REGISTRY/REPO[:TAG]`, as given to `--push` (an `oci://` prefix is allowed).
#[derive(Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        let bad = |why: &str| {
            format!("--push {text}: {why} (expected REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/trustip:0.1.0)")
        };
        if rest.contains('@') {
            return Err(bad("a digest cannot be pushed to; give a tag"));
        }
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("no registry"))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port, or localhost)",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_string())),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if let Some(tag) = &tag {
            if !super::tag_ok(tag) {
                return Err(bad("invalid tag"));
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
        })
    }
}

pub struct Registry {
    agent: ureq::Agent,
    base: String,
    https: bool,
    reference: Reference,
}

impl Registry {
    /// `insecure`: plain HTTP instead of HTTPS (a registry on loopback or in a test).
    pub fn new(reference: Reference, insecure: bool) -> Registry {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            // Over HTTPS, never send a blob in plain text (an upload Location or a redirect
            // naming http://); and follow no redirect with data.
            .https_only(!insecure)
            .max_redirects(0)
            .build();
        let scheme = if insecure { "http" } else { "https" };
        Registry {
            agent: config.into(),
            base: format!("{scheme}://{}", reference.registry),
            https: !insecure,
            reference,
        }
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.reference.registry, self.reference.repository)
    }

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> CliError {
        CliError::Usage(format!("cannot push to {}: {what}: {detail}", self.name()))
    }

    /// A request that got no HTTP answer. TLS spoken to a plain-HTTP registry reads as a corrupt
    /// TLS record: say so.
    fn transport_error(&self, what: &str, err: ureq::Error) -> CliError {
        let text = err.to_string();
        if self.https && (text.contains("InvalidContentType") || text.contains("corrupt message")) {
            return self.error(
                what,
                format!("{text} (a plain-HTTP registry? add --insecure)"),
            );
        }
        self.error(what, text)
    }

    fn status_error(
        &self,
        what: &str,
        response: &mut ureq::http::Response<ureq::Body>,
    ) -> CliError {
        let status = response.status();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        // A registry's error body is JSON ({"errors":[{"code","message"}]}); keep one line.
        let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        // Printable only: a registry cannot put escape sequences on the terminal.
        let body: String = body.chars().filter(|c| !c.is_control()).take(300).collect();
        let hint = if status == 401 {
            " (authentication is not supported: push to a registry that accepts anonymous pushes)"
        } else {
            ""
        };
        self.error(what, format!("HTTP {status}{hint} {body}").trim_end())
    }

    /// Pushes `image`'s blobs (those the registry lacks) and its manifest as `tag`; returns the
    /// manifest digest, which the registry's `Docker-Content-Digest` must confirm.
    pub fn push(&self, image: &Image, tag: &str) -> Result<String, CliError> {
        for blob in &image.blobs {
            self.push_blob(blob)?;
        }
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            self.base, self.reference.repository
        );
        let mut response = self
            .agent
            .put(&url)
            .header("Content-Type", image.manifest.media_type)
            .send(&image.manifest.bytes[..])
            .map_err(|err| self.transport_error(&format!("manifest {tag}"), err))?;
        if response.status() != 201 {
            return Err(self.status_error(&format!("manifest {tag}"), &mut response));
        }
        let reported = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok());
        match reported {
            Some(reported) if reported == image.manifest.digest => {}
            Some(reported) => {
                return Err(self.error(
                    &format!("manifest {tag}"),
                    format!(
                        "the registry stored digest {reported}, not {}",
                        image.manifest.digest
                    ),
                ))
            }
            None => {
                return Err(self.error(
                    &format!("manifest {tag}"),
                    "the registry did not report the digest it stored (Docker-Content-Digest)",
                ))
            }
        }
        Ok(image.manifest.digest.clone())
    }

    fn push_blob(&self, blob: &Blob) -> Result<(), CliError> {
        let repo = &self.reference.repository;
        let what = format!("blob {}", blob.digest);
        let head = format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest);
        let mut response = self
            .agent
            .head(&head)
            .call()
            .map_err(|err| self.transport_error(&what, err))?;
        match response.status().as_u16() {
            200 => return Ok(()),
            404 => {}
            _ => return Err(self.status_error(&what, &mut response)),
        }
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let mut response = self
            .agent
            .post(&start)
            .send_empty()
            .map_err(|err| self.transport_error(&what, err))?;
        if response.status() != 202 {
            return Err(self.status_error(&what, &mut response));
        }
        let location = response
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.error(&what, "the upload answer has no Location"))?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={}", blob.digest);
        let mut response = self
            .agent
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .send(&blob.bytes[..])
            .map_err(|err| self.transport_error(&what, err))?;
        if response.status() != 201 {
            return Err(self.status_error(&what, &mut response));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(registry: &str, repository: &str, tag: Option<&str>) -> Reference {
        Reference {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("127.0.0.1:5000/trustip:1.0"),
            Ok(reference("127.0.0.1:5000", "trustip", Some("1.0")))
        );
        assert_eq!(
            Reference::parse("oci://ghcr.io/acme/trustip"),
            Ok(reference("ghcr.io", "acme/trustip", None))
        );
        assert_eq!(
            Reference::parse("localhost/a/b:x_1"),
            Ok(reference("localhost", "a/b", Some("x_1")))
        );
        for bad in [
            "trustip:1",
            "docker.io/Trustip",
            "r.io/trustip@sha256:00",
            "r.io/",
            "r.io/t:-x",
            "r.io//t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
