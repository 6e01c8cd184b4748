//! Which normative statements of the MQTT specifications the tests reference.
//!
//! The statement ids come from `spec/mqtt-3.1.1-statements.txt` and
//! `spec/mqtt-5.0-statements.txt` at the workspace root: a first `#` comment line, then
//! one statement per line, tab-separated `ID  section  title`.
//!
//! # What counts
//!
//! - **A reference** is the text `[MQTT-x.y.z-n]` in test code: `[MQTT-`, then everything
//!   up to the next `]` on the same line. Text that does not start with a digit after
//!   `[MQTT-` (a placeholder such as the one above) is not a reference; anything that
//!   does is one, and must then be a known id.
//! - **Test code** is, per crate (a directory whose `Cargo.toml` has a `[package]`):
//!   - every `.rs` file under the crate's `tests/` directory;
//!   - in `.rs` files under the crate's `src/` directory, the lines after the first line
//!     containing `#[cfg(test)]` (that line itself and everything before it do not count);
//!   - the whole `tests/` crate of the workspace (`mqtt-tests`: `tests/src` and
//!     `tests/tests`), reported as crate `tests`.
//!
//!   Benches, examples and build scripts are not test code. Directories named `target`,
//!   `fuzz` or `.git` are skipped wherever they are, so fuzz targets never count.
//! - **Versions.** A reference counts for every specification version whose list contains
//!   the id, unless a version prefix stands directly before it (only spaces or tabs in
//!   between, and no letter, digit, `.` or `_` right before the prefix): `3.1.1 [MQTT-…]`
//!   counts only for 3.1.1, `5.0 [MQTT-…]` only for 5.0. The ids are numbered differently
//!   in the two versions, so tests tag them where it matters. A prefix applies to the one
//!   reference right after it: in `3.1.1 [A], [B]`, `B` is unprefixed.
//! - **Errors.** An unprefixed id in neither list, or a prefixed id not in the list of its
//!   version, is an error reported with its file and line. Typos do not silently go
//!   uncounted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// A version of the MQTT specification that has normative statement ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (OASIS Standard, 2014).
    Mqtt311,
    /// MQTT 5.0 (OASIS Standard, 2019).
    Mqtt5,
}

impl Version {
    /// Both versions, in table order.
    pub const ALL: [Version; 2] = [Version::Mqtt311, Version::Mqtt5];

    /// The version as written in prefixes and table headers: `3.1.1` or `5.0`.
    pub fn label(self) -> &'static str {
        match self {
            Version::Mqtt311 => "3.1.1",
            Version::Mqtt5 => "5.0",
        }
    }

    /// The statement list's file name under `spec/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Version::Mqtt311 => "mqtt-3.1.1-statements.txt",
            Version::Mqtt5 => "mqtt-5.0-statements.txt",
        }
    }

    fn index(self) -> usize {
        match self {
            Version::Mqtt311 => 0,
            Version::Mqtt5 => 1,
        }
    }
}

/// One normative statement of a specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The id, e.g. `MQTT-3.1.2-3`.
    pub id: String,
    /// The section where the statement appears, e.g. `3.1.2`.
    pub section: String,
    /// The section's title.
    pub title: String,
}

/// The normative statements of one specification version, in file order.
#[derive(Clone, Debug)]
pub struct SpecList {
    /// Which version the list belongs to.
    pub version: Version,
    /// The statements, in the order of the file.
    pub statements: Vec<Statement>,
    ids: BTreeSet<String>,
}

impl SpecList {
    /// Parses a statement list: `#` comment lines and blank lines are skipped, every other
    /// line is `ID<TAB>section<TAB>title`. Duplicate ids and ids not starting with `MQTT-`
    /// are errors.
    pub fn parse(version: Version, text: &str) -> Result<SpecList, String> {
        let mut statements = Vec::new();
        let mut ids = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split('\t');
            let id = fields.next().unwrap_or_default().trim();
            let section = fields.next().unwrap_or_default().trim();
            let title = fields.next().unwrap_or_default().trim();
            let where_ = format!("{} list, line {}", version.label(), n + 1);
            if !id.starts_with("MQTT-") || id.contains(char::is_whitespace) {
                return Err(format!("{where_}: malformed statement id {id:?}"));
            }
            if !ids.insert(id.to_owned()) {
                return Err(format!("{where_}: duplicate statement id {id}"));
            }
            statements.push(Statement {
                id: id.to_owned(),
                section: section.to_owned(),
                title: title.to_owned(),
            });
        }
        Ok(SpecList {
            version,
            statements,
            ids,
        })
    }

    /// Whether the list contains `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The number of statements.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether the list has no statements.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// A statement id referenced in test code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The id as written, with the `MQTT-` prefix, e.g. `MQTT-3.1.2-3`.
    pub id: String,
    /// The version prefix written directly before the reference, if any.
    pub version: Option<Version>,
    /// The 1-based line number.
    pub line: usize,
}

/// Finds the references in `text`, whose first line is line `first_line` (1-based) of its
/// file.
pub fn find_references(text: &str, first_line: usize) -> Vec<Reference> {
    const OPEN: &str = "[MQTT-";
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(OPEN) {
            let start = from + pos;
            let body_start = start + OPEN.len();
            let rest = &line[body_start..];
            from = body_start;
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            // An unterminated reference takes the rest of the line, which then fails the
            // lookup and is reported.
            let body = rest.find(']').map_or(rest, |end| &rest[..end]);
            refs.push(Reference {
                id: format!("MQTT-{body}"),
                version: version_prefix(&line[..start]),
                line: first_line + n,
            });
        }
    }
    refs
}

/// The version prefix at the end of `before` (the text before a `[MQTT-`), if any.
fn version_prefix(before: &str) -> Option<Version> {
    let before = before.trim_end_matches([' ', '\t']);
    Version::ALL.into_iter().find(|v| {
        before.strip_suffix(v.label()).is_some_and(|head| {
            !head
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
        })
    })
}

/// The part of a file that is test code, as `(first line number, text)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// All of the file is test code (integration tests, the `tests` crate).
    Test,
    /// A source file: only the lines after the first line containing `#[cfg(test)]`.
    Source,
}

/// The test code in `text`: `(1-based number of its first line, text)`, or `None` when the
/// file has none.
pub fn test_code(kind: FileKind, text: &str) -> Option<(usize, &str)> {
    match kind {
        FileKind::Test => Some((1, text)),
        FileKind::Source => {
            let mut offset = 0;
            for (n, line) in text.split_inclusive('\n').enumerate() {
                offset += line.len();
                if line.contains("#[cfg(test)]") {
                    return Some((n + 2, &text[offset..]));
                }
            }
            None
        }
    }
}

/// The ids one crate's tests reference, per version.
#[derive(Clone, Debug, Default)]
pub struct CrateCoverage {
    ids: [BTreeSet<String>; 2],
}

impl CrateCoverage {
    /// The ids of `version` referenced at least once.
    pub fn ids(&self, version: Version) -> &BTreeSet<String> {
        &self.ids[version.index()]
    }
}

/// The result of a scan: the statement lists, the referenced ids per crate, and the
/// references to unknown ids.
#[derive(Clone, Debug)]
pub struct Coverage {
    lists: [SpecList; 2],
    /// Referenced ids per crate, by crate directory relative to the workspace root.
    pub crates: BTreeMap<String, CrateCoverage>,
    /// One message per reference to an id not in the relevant list(s), with file and line.
    pub errors: Vec<String>,
}

impl Coverage {
    /// An empty coverage against the two statement lists.
    pub fn new(v311: SpecList, v5: SpecList) -> Coverage {
        assert_eq!(v311.version, Version::Mqtt311, "first list must be 3.1.1");
        assert_eq!(v5.version, Version::Mqtt5, "second list must be 5.0");
        Coverage {
            lists: [v311, v5],
            crates: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// The statement list of `version`.
    pub fn list(&self, version: Version) -> &SpecList {
        &self.lists[version.index()]
    }

    /// Registers a crate, so that it shows in the table even with no references.
    pub fn add_crate(&mut self, name: &str) {
        self.crates.entry(name.to_owned()).or_default();
    }

    /// Counts the references in the test code of one file of crate `krate`; `path` names
    /// the file in error messages.
    pub fn add_file(&mut self, krate: &str, path: &str, kind: FileKind, text: &str) {
        let Some((first_line, code)) = test_code(kind, text) else {
            self.add_crate(krate);
            return;
        };
        let refs = find_references(code, first_line);
        let entry = self.crates.entry(krate.to_owned()).or_default();
        for r in refs {
            let versions: Vec<Version> = match r.version {
                Some(v) => vec![v],
                None => Version::ALL.to_vec(),
            };
            let mut known = false;
            for v in versions {
                if self.lists[v.index()].contains(&r.id) {
                    entry.ids[v.index()].insert(r.id.clone());
                    known = true;
                }
            }
            if !known {
                let msg = match r.version {
                    Some(v) => format!("{} is not in the {} list", r.id, v.label()),
                    None => format!("{} is in neither statement list", r.id),
                };
                self.errors.push(format!("{path}:{}: {msg}", r.line));
            }
        }
    }

    /// The ids of `version` referenced by any crate.
    pub fn total(&self, version: Version) -> BTreeSet<&str> {
        self.crates
            .values()
            .flat_map(|c| c.ids(version))
            .map(String::as_str)
            .collect()
    }

    /// The statements of `version` that no test references, in list order.
    pub fn unreferenced(&self, version: Version) -> Vec<&Statement> {
        let total = self.total(version);
        self.list(version)
            .statements
            .iter()
            .filter(|s| !total.contains(s.id.as_str()))
            .collect()
    }

    /// The table: one row per crate, `referenced/total` per version, and a total row
    /// counting the union over crates.
    pub fn table(&self) -> String {
        let cell = |n: usize, v: Version| format!("{n}/{}", self.list(v).len());
        let mut rows: Vec<[String; 3]> = vec![[
            "crate".to_owned(),
            Version::Mqtt311.label().to_owned(),
            Version::Mqtt5.label().to_owned(),
        ]];
        for (name, c) in &self.crates {
            rows.push([
                name.clone(),
                cell(c.ids(Version::Mqtt311).len(), Version::Mqtt311),
                cell(c.ids(Version::Mqtt5).len(), Version::Mqtt5),
            ]);
        }
        rows.push([
            "total".to_owned(),
            cell(self.total(Version::Mqtt311).len(), Version::Mqtt311),
            cell(self.total(Version::Mqtt5).len(), Version::Mqtt5),
        ]);
        let mut widths = [0; 3];
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let last = rows.len() - 1;
        for (i, row) in rows.iter().enumerate() {
            if i == last {
                push_rule(&mut out, &widths);
            }
            let _ = writeln!(
                out,
                "| {:<w0$} | {:>w1$} | {:>w2$} |",
                row[0],
                row[1],
                row[2],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            if i == 0 {
                push_rule(&mut out, &widths);
            }
        }
        out
    }

    /// The statements not referenced yet, per version: `ID<TAB>section<TAB>title` lines
    /// under a heading.
    pub fn unreferenced_report(&self) -> String {
        let mut out = String::new();
        for v in Version::ALL {
            let missing = self.unreferenced(v);
            let _ = writeln!(
                out,
                "\n{} statements not referenced ({}/{}):",
                v.label(),
                missing.len(),
                self.list(v).len()
            );
            for s in missing {
                let _ = writeln!(out, "{}\t{}\t{}", s.id, s.section, s.title);
            }
        }
        out
    }
}

fn push_rule(out: &mut String, widths: &[usize; 3]) {
    let _ = writeln!(
        out,
        "|{}|{}:|{}:|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 1),
        "-".repeat(widths[2] + 1),
    );
}

/// The workspace root, the parent of the `mqtt-tests` crate.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Reads the statement lists under `root/spec` and scans every crate under `root`.
///
/// Fails on I/O errors and malformed statement lists; unknown referenced ids are collected
/// in [`Coverage::errors`].
pub fn scan_workspace(root: &Path) -> Result<Coverage, String> {
    let read_list = |v: Version| {
        let path = root.join("spec").join(v.file_name());
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        SpecList::parse(v, &text)
    };
    let mut coverage = Coverage::new(read_list(Version::Mqtt311)?, read_list(Version::Mqtt5)?);
    walk(root, root, None, &mut coverage)?;
    Ok(coverage)
}

/// Directory names never descended into.
const SKIPPED_DIRS: [&str; 3] = ["target", "fuzz", ".git"];

/// The crate a walked directory belongs to: its name and its root directory.
struct CrateDir {
    name: String,
    dir: PathBuf,
}

fn walk(
    root: &Path,
    dir: &Path,
    krate: Option<&CrateDir>,
    coverage: &mut Coverage,
) -> Result<(), String> {
    let io_err = |e: std::io::Error| format!("reading {}: {e}", dir.display());
    let own_crate = is_package(dir)?.then(|| {
        let rel = relative(root, dir);
        CrateDir {
            name: if rel.is_empty() { ".".to_owned() } else { rel },
            dir: dir.to_path_buf(),
        }
    });
    if let Some(c) = &own_crate {
        coverage.add_crate(&c.name);
    }
    let krate = own_crate.as_ref().or(krate);

    let mut entries = fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err)?;
        let name = entry.file_name();
        if file_type.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                walk(root, &path, krate, coverage)?;
            }
        } else if file_type.is_file() && path.extension().is_some_and(|e| e == "rs") {
            let Some(c) = krate else { continue };
            let Some(kind) = file_kind(root, c, &path) else {
                continue;
            };
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            coverage.add_file(&c.name, &relative(root, &path), kind, &text);
        }
    }
    Ok(())
}

/// Whether `dir` holds a `Cargo.toml` with a `[package]` section.
fn is_package(dir: &Path) -> Result<bool, String> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Ok(false);
    }
    let text = fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    Ok(text.lines().any(|l| l.trim() == "[package]"))
}

/// How much of the `.rs` file `path` of crate `c` is test code, if any.
fn file_kind(root: &Path, c: &CrateDir, path: &Path) -> Option<FileKind> {
    if c.dir == root.join("tests") {
        return Some(FileKind::Test);
    }
    let rel = path.strip_prefix(&c.dir).ok()?;
    match rel.components().next()?.as_os_str().to_str()? {
        "tests" => Some(FileKind::Test),
        "src" => Some(FileKind::Source),
        _ => None,
    }
}

/// `path` relative to `root`, with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `@` for the opening bracket of a reference, so that this file (all of which
    /// is test code) does not itself reference the sample's ids.
    fn sample(text: &str) -> String {
        text.replace('@', "[")
    }

    fn lists() -> (SpecList, SpecList) {
        let v311 = SpecList::parse(
            Version::Mqtt311,
            "# 3.1.1 sample\n\
             MQTT-1.0.0-1\t1.0\tBoth\n\
             MQTT-3.1.1-1\t3.1\tOnly 3.1.1\n\
             MQTT-4.7.1-2\t4.7.1\tShifted\n",
        )
        .unwrap();
        let v5 = SpecList::parse(
            Version::Mqtt5,
            "# 5.0 sample\n\
             MQTT-1.0.0-1\t1.0\tBoth\n\
             MQTT-5.0.0-1\t5.0\tOnly 5.0\n\
             MQTT-4.7.1-1\t4.7.1\tShifted\n\
             MQTT-4.7.1-2\t4.7.1\tShifted\n",
        )
        .unwrap();
        (v311, v5)
    }

    fn ids(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn parses_lists() {
        let (v311, v5) = lists();
        assert_eq!(v311.len(), 3);
        assert_eq!(v5.len(), 4);
        assert!(v311.contains("MQTT-3.1.1-1") && !v5.contains("MQTT-3.1.1-1"));
        assert_eq!(v5.statements[2].section, "4.7.1");
        assert!(SpecList::parse(Version::Mqtt5, "MQTT-1-1\ta\tb\nMQTT-1-1\ta\tb\n").is_err());
        assert!(SpecList::parse(Version::Mqtt5, "1.2.3-4\ta\tb\n").is_err());
    }

    #[test]
    fn finds_prefixed_and_unprefixed_references() {
        let text = sample(
            "// @MQTT-1.0.0-1] and 3.1.1 @MQTT-4.7.1-2], @MQTT-4.7.1-2]\n\
             // (5.0  @MQTT-4.7.1-1]) 13.1.1 @MQTT-1.0.0-1] v5.0 @MQTT-1.0.0-1]\n\
             // @MQTT-x.y.z-n] is a placeholder, @MQTT-2.0.0-1 is unterminated\n",
        );
        let got: Vec<(String, Option<Version>, usize)> = find_references(&text, 10)
            .into_iter()
            .map(|r| (r.id, r.version, r.line))
            .collect();
        let want = [
            ("MQTT-1.0.0-1", None, 10),
            ("MQTT-4.7.1-2", Some(Version::Mqtt311), 10),
            ("MQTT-4.7.1-2", None, 10),
            ("MQTT-4.7.1-1", Some(Version::Mqtt5), 11),
            ("MQTT-1.0.0-1", None, 11),
            ("MQTT-1.0.0-1", None, 11),
            ("MQTT-2.0.0-1 is unterminated", None, 12),
        ];
        let want: Vec<(String, Option<Version>, usize)> = want
            .into_iter()
            .map(|(id, v, l)| (id.to_owned(), v, l))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn counts_source_files_after_cfg_test_only() {
        let text = sample(
            "/// @MQTT-5.0.0-1] in a doc comment\n\
             fn f() {}\n\
             #[cfg(test)]\n\
             mod tests {\n\
             // @MQTT-1.0.0-1]\n\
             }\n",
        );
        let (line, code) = test_code(FileKind::Source, &text).unwrap();
        assert_eq!(line, 4);
        assert!(code.starts_with("mod tests {"));
        assert_eq!(test_code(FileKind::Source, "fn f() {}\n"), None);

        let (v311, v5) = lists();
        let mut cov = Coverage::new(v311, v5);
        cov.add_file("proto", "proto/src/lib.rs", FileKind::Source, &text);
        cov.add_file(
            "proto",
            "proto/src/other.rs",
            FileKind::Source,
            "fn g() {}\n",
        );
        cov.add_crate("empty");
        let proto = &cov.crates["proto"];
        assert_eq!(ids(proto.ids(Version::Mqtt311)), ["MQTT-1.0.0-1"]);
        assert_eq!(ids(proto.ids(Version::Mqtt5)), ["MQTT-1.0.0-1"]);
        assert!(cov.crates["empty"].ids(Version::Mqtt5).is_empty());
        assert!(cov.errors.is_empty(), "{:?}", cov.errors);
    }

    #[test]
    fn counts_per_version_and_reports_unknown_ids() {
        let (v311, v5) = lists();
        let mut cov = Coverage::new(v311, v5);
        let a = sample(
            "// 3.1.1 @MQTT-4.7.1-2] @MQTT-5.0.0-1]\n\
             // @MQTT-3.1.1-1]\n\
             // @MQTT-9.9.9-9]\n\
             // 3.1.1 @MQTT-5.0.0-1]\n",
        );
        cov.add_file("a", "a/tests/t.rs", FileKind::Test, &a);
        let b = sample("// 5.0 @MQTT-4.7.1-2] @MQTT-1.0.0-1]\n");
        cov.add_file("b", "b/tests/t.rs", FileKind::Test, &b);

        let crate_a = &cov.crates["a"];
        assert_eq!(
            ids(crate_a.ids(Version::Mqtt311)),
            ["MQTT-3.1.1-1", "MQTT-4.7.1-2"]
        );
        assert_eq!(ids(crate_a.ids(Version::Mqtt5)), ["MQTT-5.0.0-1"]);
        let crate_b = &cov.crates["b"];
        assert_eq!(ids(crate_b.ids(Version::Mqtt311)), ["MQTT-1.0.0-1"]);
        assert_eq!(
            ids(crate_b.ids(Version::Mqtt5)),
            ["MQTT-1.0.0-1", "MQTT-4.7.1-2"]
        );
        assert_eq!(
            cov.errors,
            [
                "a/tests/t.rs:3: MQTT-9.9.9-9 is in neither statement list",
                "a/tests/t.rs:4: MQTT-5.0.0-1 is not in the 3.1.1 list",
            ]
        );

        assert_eq!(cov.total(Version::Mqtt311).len(), 3);
        assert_eq!(cov.total(Version::Mqtt5).len(), 3);
        let missing: Vec<&str> = cov
            .unreferenced(Version::Mqtt5)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(missing, ["MQTT-4.7.1-1"]);
        assert_eq!(
            cov.table(),
            "| crate | 3.1.1 | 5.0 |\n\
             |-------|------:|----:|\n\
             | a     |   2/3 | 1/4 |\n\
             | b     |   1/3 | 2/4 |\n\
             |-------|------:|----:|\n\
             | total |   3/3 | 3/4 |\n"
        );
    }
}
