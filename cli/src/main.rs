//! `trustip`: the operator's command line. It shares the filter's core, so `explain` prints
//! exactly what Envoy decides.

mod error;
mod explain;
mod hostport;
mod lint;
mod names;
mod package;
mod policy_file;
mod probe;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Who is the client? Tools for trustip, the client-IP filter for Envoy behind an L4 load
/// balancer.
#[derive(Parser)]
#[command(name = "trustip", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the filter's decision on given inputs and print the outcome.
    Explain(explain::ExplainArgs),
    /// Print deployment configuration (Envoy bootstrap, Istio resources, docker-compose stack)
    /// built from a policy.
    Render(Box<render::RenderArgs>),
    /// Print the names trustip shares with Envoy configurations (root ids, filter-state keys,
    /// counter names, default header lists) as JSON.
    Names(names::NamesArgs),
    /// Diagnose a live listener from outside: does it expect PROXY, and can clients spoof?
    Probe(probe::ProbeArgs),
    /// Build OCI images of trustip.wasm (the Docker-image and wasm-artifact forms Istio and
    /// Envoy Gateway pull), write an OCI layout, optionally push them to a registry.
    Package(package::PackageArgs),
    /// Check trustip's wiring and policy in Envoy, Istio and Envoy Gateway configurations.
    ///
    /// Reads Envoy bootstraps and listener files (YAML or JSON, static or file-based xDS),
    /// Istio manifests (WasmPlugin, EnvoyFilter, the gateway Deployment's proxy.istio.io/config
    /// annotation), Envoy Gateway manifests (EnvoyExtensionPolicy, ClientTrafficPolicy,
    /// BackendTrafficPolicy) and trustip policy files; finds every trustip filter of either
    /// build, validates its policy with the filter's own configuration step and checks the
    /// wiring around it. Each finding: a stable id, its severity (error: spoofing or an outage
    /// is possible; warning), the file, resource and JSON path, what happens at run time, and
    /// the fix. The Kubernetes resources given in one call are taken as one gateway: give all
    /// of them together. Exit status: 0 clean, 1 warnings only, 2 errors or unreadable input.
    /// Every rule: docs/lint.md.
    Lint(lint::LintArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version with exit 0 and usage errors with 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Explain(args) => explain::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Names(args) => Ok(names::run(&args)),
        Command::Package(args) => package::run(&args),
        Command::Lint(args) => Ok(lint::run(&args)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}
