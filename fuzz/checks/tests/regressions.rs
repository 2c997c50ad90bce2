//! Every committed input of `fuzz/regressions/<target>/` through its target's check: the inputs
//! that once broke a property, and the seeds that reach each parser's paths, stay checked by the
//! ordinary test run, without nightly or cargo-fuzz.

use std::panic::{AssertUnwindSafe, catch_unwind};

fn run(target: &str) {
    let check = sync_fuzz_checks::check_of(target).expect("a known target");
    let dir = sync_fuzz_checks::regressions_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable input");
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: properties fail on {failed:#?}");
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            assert_eq!(tested.as_slice(), sync_fuzz_checks::TARGETS);
        }
    };
}

targets!(
    push_schemaless,
    push_declared,
    pull_query,
    config_toml,
    client_pull_answer,
    client_push_answer,
    jwt_bearer,
    basic_credentials,
    webhook_signature,
);
