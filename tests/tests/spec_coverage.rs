//! Scans the workspace for statement references: every referenced id must exist in the
//! statement list of its version, and the coverage table is printed.

use std::io::Write as _;

use mqtt_tests::spec_coverage::{scan_workspace, workspace_root, Version};

#[test]
fn referenced_statement_ids_exist() {
    let coverage = scan_workspace(&workspace_root()).expect("scan the workspace");
    assert_eq!(
        coverage.list(Version::Mqtt311).len(),
        141,
        "3.1.1 statement list"
    );
    assert_eq!(
        coverage.list(Version::Mqtt5).len(),
        251,
        "5.0 statement list"
    );

    // Written to the stderr handle directly rather than with `eprint!`, so that the table
    // shows whether or not the test harness captures output.
    let table = format!(
        "\nspecification statements referenced by tests:\n{}",
        coverage.table()
    );
    let _ = std::io::stderr().lock().write_all(table.as_bytes());

    assert!(
        coverage.errors.is_empty(),
        "tests reference unknown statement ids:\n  {}",
        coverage.errors.join("\n  ")
    );
}
