//! Every committed fuzz input (fuzz/seeds/<target>/ and fuzz/regressions/<target>/) replayed
//! through its target's check, on the stable toolchain, by `cargo test`: an input that once
//! made a target fail stays a test.

use std::path::{Path, PathBuf};

use super::{run, TARGETS};

/// The files of `dir`, sorted; `Err` when it cannot be read (a missing directory fails the
/// test rather than replaying nothing).
fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The committed regressions (fuzz/regressions/<target>/<name>): each must be replayed.
const REGRESSIONS: &[&str] = &[
    "decision/client-header-equal-to-c",
    "decision/proxy-same-address-other-port",
    "xff/bracketed-ipv6-bad-port",
];

#[test]
fn every_seed_and_regression_passes_its_check() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    let mut replayed = Vec::new();
    for (target, _) in TARGETS {
        let seeds = files(&fuzz.join("seeds").join(target)).unwrap();
        // Every target has seeds: this test cannot pass by finding nothing.
        assert!(
            seeds.len() >= 3,
            "fuzz/seeds/{target} holds {} inputs",
            seeds.len()
        );
        // A target without regressions has no folder of them; fuzz/regressions must exist.
        let dir = fuzz.join("regressions").join(target);
        assert!(
            fuzz.join("regressions").is_dir(),
            "no directory {}",
            fuzz.join("regressions").display()
        );
        let regressions = if dir.exists() {
            files(&dir).unwrap()
        } else {
            Vec::new()
        };
        replayed.extend(
            regressions
                .iter()
                .filter_map(|p| p.strip_prefix(fuzz.join("regressions")).ok())
                .map(|p| p.to_string_lossy().into_owned()),
        );
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if let Err(why) = run(target, &data) {
                failures.push(format!("{}: {why}", path.display()));
            }
        }
    }
    for name in REGRESSIONS {
        assert!(
            replayed.iter().any(|r| r == name),
            "fuzz/regressions/{name} was not replayed (replayed: {replayed:?})"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let source = std::fs::read_to_string(targets.join(format!("{target}.rs"))).unwrap();
        assert!(
            source.contains(&format!("fuzz(\"{target}\"")),
            "fuzz/fuzz_targets/{target}.rs does not run the {target} check"
        );
    }
    assert!(run("no-such-target", b"").is_err());
}
