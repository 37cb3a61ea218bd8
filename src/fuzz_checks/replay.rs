//! Every committed fuzz input (fuzz/seeds/<target>/ and fuzz/regressions/<target>/) replayed
//! through its target's check, on the stable toolchain, by `cargo test`: an input that once
//! made a target fail stays a test.

use std::path::{Path, PathBuf};

use super::{run, TARGETS};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_passes_its_check() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, _) in TARGETS {
        let seeds = files(&fuzz.join("seeds").join(target));
        // Every target has seeds: this test cannot pass by finding nothing.
        assert!(
            seeds.len() >= 3,
            "fuzz/seeds/{target} holds {} inputs",
            seeds.len()
        );
        let regressions = files(&fuzz.join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if let Err(why) = run(target, &data) {
                failures.push(format!("{}: {why}", path.display()));
            }
        }
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
