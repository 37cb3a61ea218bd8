//! `trustip lint FILE...`: reads Envoy configurations (bootstraps, listener files, file-based
//! xDS), Istio and Envoy Gateway manifests, and bare policy files; finds every trustip filter
//! of either build, validates its policy with the filter's own configuration step
//! (`Policy::from_json`) and checks the wiring around it. Each finding has a stable id (the
//! rules are in [`rules::RULES`] and docs/lint.md), a severity, the file, resource and JSON
//! path, what happens at run time, and the fix. Exit status: 0 clean, 1 warnings, 2 errors
//! (also for input that cannot be read).

mod envoy;
mod kube;
mod model;
mod parse;
mod rules;
#[cfg(test)]
mod tests;

use serde_json::{json, Value};
use trustip::core::config::POLICY_FIELDS;

use model::{compile, Build, Deployment, Kind, Location, Trustip};
use rules::{Finding, Findings, Severity};

/// `trustip lint`'s arguments (the help text is on the subcommand, in main.rs).
#[derive(clap::Args)]
pub struct LintArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The files to check (`-`: standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One block per finding, then a count.
    Text,
    /// One JSON object: files, findings, errors, warnings.
    Json,
}

/// An object whose keys are at least half policy keys: a misspelt field (`xff_trusted`) makes
/// it a policy the filter refuses (policy-invalid), not a file lint does not recognise.
fn is_policy(doc: &Value) -> bool {
    doc.as_object().is_some_and(|object| {
        let known = object
            .keys()
            .filter(|k| POLICY_FIELDS.contains(&k.as_str()))
            .count();
        known > 0 && known * 2 >= object.len()
    })
}

/// Lints the files; the findings in input order.
pub fn lint(files: &[String]) -> Vec<Finding> {
    let mut deployment = Deployment::default();
    let mut kube = kube::Kube::default();
    let mut findings = Findings::default();
    for file in files {
        let docs = match parse::read_text(file).and_then(|text| parse::documents(&text)) {
            Ok(docs) => docs,
            Err(message) => {
                findings.push(
                    "unreadable-input",
                    &Location::new(file, "", ""),
                    format!("{message}: Envoy or the Kubernetes API server would refuse it too"),
                    "give a YAML or JSON Envoy configuration, Kubernetes manifest or trustip policy",
                );
                continue;
            }
        };
        let mut found = false;
        for doc in &docs {
            let value = &doc.value;
            if kube::is_kube(value) {
                kube.read(value, file, "");
                found = true;
            } else if envoy::read(value, file, &mut deployment) {
                found = true;
            } else if is_policy(value) {
                let text = value.to_string();
                deployment.policies.push(Trustip {
                    build: Build::Wasm,
                    kind: Kind::Http,
                    location: Location::new(file, "policy", ""),
                    selector: None,
                    fail_open: None,
                    vm: None,
                    disabled: Vec::new(),
                    policy_location: Location::new(file, "policy", ""),
                    policy: compile(&text),
                    policy_text: text,
                });
                found = true;
            }
        }
        if !found {
            findings.push(
                "no-config-found",
                &Location::new(file, "", ""),
                "nothing in this file is an Envoy configuration, an Istio or Envoy Gateway resource or a trustip policy, so nothing was checked",
                "give the Envoy bootstrap or listener file, the Kubernetes manifests or the policy file",
            );
        }
    }
    kube.finish(&mut deployment);
    rules::check(&deployment, &mut findings);
    findings.0
}

pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => 2,
        Some(Severity::Warning) => 1,
        None => 0,
    }
}

fn count(findings: &[Finding], severity: Severity) -> usize {
    findings.iter().filter(|f| f.severity == severity).count()
}

pub fn to_json(files: &[String], findings: &[Finding]) -> Value {
    json!({
        "files": files,
        "findings": findings.iter().map(|f| json!({
            "id": f.id,
            "severity": f.severity.name(),
            "file": f.location.file,
            "resource": f.location.resource,
            "path": f.location.path,
            "runtime": f.runtime,
            "fix": f.fix,
        })).collect::<Vec<_>>(),
        "errors": count(findings, Severity::Error),
        "warnings": count(findings, Severity::Warning),
    })
}

/// Text from the inputs (file names, resource names, paths and values quoted in messages) as
/// the terminal may show it: control characters (escape sequences, line breaks) and the
/// Unicode bidirectional controls escaped, so a finding stays one line per field and a name
/// cannot rewrite the terminal.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn to_text(files: &[String], findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let mut place = f.location.file.clone();
        if !f.location.resource.is_empty() {
            place.push_str(&format!(": {}", f.location.resource));
        }
        if !f.location.path.is_empty() {
            place.push_str(&format!(": {}", f.location.path));
        }
        out.push_str(&format!(
            "{}[{}] {}\n  at run time: {}\n  fix: {}\n",
            f.severity.name(),
            f.id,
            printable(&place),
            printable(&f.runtime),
            printable(&f.fix)
        ));
    }
    let (errors, warnings) = (
        count(findings, Severity::Error),
        count(findings, Severity::Warning),
    );
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if findings.is_empty() {
        out.push_str(&format!("{}: no findings\n", plural(files.len(), "file")));
    } else {
        out.push_str(&format!(
            "{}, {} in {}\n",
            plural(errors, "error"),
            plural(warnings, "warning"),
            plural(files.len(), "file")
        ));
    }
    out
}

pub fn run(args: &LintArgs) -> u8 {
    let findings = lint(&args.files);
    let text = match args.format {
        Format::Json => format!("{:#}\n", to_json(&args.files, &findings)),
        Format::Text => to_text(&args.files, &findings),
    };
    // A closed pipe (`| head`) is not worth a panic; the exit status still tells.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    exit_code(&findings)
}
