//! The Kubernetes resource envelope the Istio and Envoy Gateway renderers share.

use serde::Serialize;

/// `apiVersion`, `kind`, `metadata` and a typed `spec`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub spec: S,
}

#[derive(Serialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
}
