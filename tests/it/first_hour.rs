//! The first hour of a new user (issue 25), through the binary: the demo runs twice, what it
//! prints next works, and each message points to the fix with the documented exit code.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::Fixture;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// Runs the binary in `dir` with `args` ([`crate::common::tributary_command`]).
fn tributary(dir: &Path, args: &[&str]) -> Output {
    crate::common::tributary_command(dir, args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of stderr that start `error:` (the error printed once, not the log lines).
fn error_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:") || l.starts_with("  caused by:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_demo_runs_twice_and_its_read_command_works() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tributary(tmp.path(), &["demo"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let second = tributary(tmp.path(), &["demo"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let (first, second) = (text(&first.stdout), text(&second.stdout));
    assert!(!first.contains("starting clean"), "{first}");
    assert!(
        second.starts_with("removed the previous demo's"),
        "{second}"
    );
    // The same two runs, the same operations.
    for out in [&first, &second] {
        assert_eq!(out.matches("applied as run 1").count(), 1, "{out}");
        assert_eq!(out.matches("applied as run 2").count(), 1, "{out}");
        assert!(out.contains("I 2000  U 4000  D 2000"), "{out}");
    }
    // A folder that is not a demo's is refused and left alone.
    std::fs::write(tmp.path().join("tributary-demo/mine.txt"), "keep").unwrap();
    let refused = tributary(tmp.path(), &["demo"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("`mine.txt`"));
    assert!(tmp.path().join("tributary-demo/lake").is_dir());
    // What the demo prints next queries the history table, offline: with `tributary sql`,
    // and with Python.
    let line = |needle: &str| {
        second
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("a `{needle}` line: {second}"))
            .trim()
            .to_string()
    };
    let query = line(" sql --config ");
    let out = Command::new("sh").args(["-c", &query]).output().unwrap();
    assert!(out.status.success(), "{query}: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    for row in [
        "| D         | 2000  |",
        "| I         | 12000 |",
        "| U         | 4000  |",
    ] {
        assert!(printed.contains(row), "{printed}");
    }
    let command = line("python3 -c");
    assert!(
        !command.contains("delta_scan"),
        "no extension download: {command}"
    );
    if !crate::common::python_has(
        "first_hour::the_demo_runs_twice_and_its_read_command_works",
        &["deltalake", "pyarrow"],
    ) {
        return;
    }
    // PyArrow's threads can abort the interpreter at exit: the command must not (10 tries).
    for _ in 0..10 {
        let read = Command::new("sh").args(["-c", &command]).output().unwrap();
        assert!(read.status.success(), "{}", text(&read.stderr));
        let printed = text(&read.stdout);
        for (op, count) in [("D", 2000), ("I", 12000), ("U", 4000)] {
            assert!(
                printed.contains(&format!("'operation': '{op}', 'operation_count': {count}")),
                "{printed}"
            );
        }
    }
}

/// Under `header: false`, a header line is refused (exit 4) before anything is written, for an
/// all-string table (where it would load as a row) and with the fix in the message.
#[test]
fn a_header_line_under_header_false_is_refused_with_the_fix() {
    let fx = Fixture::new(
        "- {name: id, type: string, key: true}\n- {name: name, type: string}\n",
        "",
    );
    let input = fx.input("d1", "x.csv", b"id,name\n1,a\n");
    let out = tributary(
        fx.dir.path(),
        &["run", "config.yaml", input.to_str().unwrap(), "2024-01-01"],
    );
    assert_eq!(out.status.code(), Some(4));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("x.csv, line 1"), "{errors:?}");
    assert!(errors[0].contains("looks like a header"), "{errors:?}");
    assert!(errors[0].contains("set `header: true`"), "{errors:?}");
    assert!(
        !fx.dir.path().join("lake").exists(),
        "the lake is untouched"
    );
    // A header with other names, in a typed table: the parse error says it may be a header.
    let fx = Fixture::new(crate::common::SIMPLE_COLUMNS, "");
    let input = fx.input("d1", "x.csv", b"ID,value\n1,2.5\n");
    let out = tributary(
        fx.dir.path(),
        &["check", "config.yaml", input.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 1, column `v`: cannot parse `value` as double"),
        "{stderr}"
    );
    assert!(stderr.contains("is line 1 a header?"), "{stderr}");
}

#[test]
fn another_delimiter_and_compressed_files_are_named() {
    let fx = Fixture::new(crate::common::SIMPLE_COLUMNS, "");
    let input = fx.input("semi", "x.csv", b"a;1.5\n");
    let out = tributary(
        fx.dir.path(),
        &["check", "config.yaml", input.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("expected 2 fields, found 1"), "{stderr}");
    assert!(stderr.contains("set `delimiter: \";\"`"), "{stderr}");
    // A folder of .csv.gz files: not "no input file" alone, but why.
    let folder = fx.input("gz", "part-0.csv.gz", b"\x1f\x8b not really gzip");
    let out = tributary(
        fx.dir.path(),
        &["check", "config.yaml", folder.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("compressed file(s) such as `part-0.csv.gz`"),
        "{stderr}"
    );
    assert!(stderr.contains("gunzip"), "{stderr}");
    let out = tributary(
        fx.dir.path(),
        &[
            "check",
            "config.yaml",
            folder.join("part-0.csv.gz").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("compressed (.gz)"));
}

/// Config errors: exit 2, printed once, no internal names; date arguments named as typed.
#[test]
fn config_and_usage_errors_say_it_once_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tributary(tmp.path(), &["validate", "missing.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing config is a usage error"
    );
    assert_eq!(
        error_lines(&out),
        ["error: config missing.yaml: cannot read it: No such file or directory (os error 2)"]
    );
    std::fs::write(tmp.path().join("bad.yaml"), "columns: [\n").unwrap();
    let out = tributary(tmp.path(), &["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "the YAML error once: {errors:?}");
    assert!(
        errors[0].starts_with("error: config bad.yaml: "),
        "{errors:?}"
    );
    // The demo's config: the extract type in the config's words.
    let fx = Fixture::new(crate::common::SIMPLE_COLUMNS, "");
    let out = tributary(fx.dir.path(), &["validate", "config.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("; full extract;"), "{stdout}");
    // `sync --date` names its own option.
    std::fs::create_dir_all(tmp.path().join("landing")).unwrap();
    let out = tributary(
        tmp.path(),
        &["sync", "landing", "--lake", "lake", "--date", "2019-13-01"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--date `2019-13-01` is not a YYYY-MM-DD date"),
        "{stderr}"
    );
    assert!(!stderr.contains("BUS_EFF_DATE"), "{stderr}");
}

/// `tables` says what an entry lacks, and `--activate` refuses an entry `sync` would reject;
/// a Debezium folder's columns come from its first event.
#[test]
fn tables_never_activates_an_entry_that_sync_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    let landing = tmp.path().join("landing");
    std::fs::create_dir_all(landing.join("s/dms")).unwrap();
    std::fs::write(landing.join("s/dms/20240101-000000000.csv"), "I,1,a\n").unwrap();
    std::fs::create_dir_all(landing.join("s/dbz")).unwrap();
    std::fs::write(
        landing.join("s/dbz/events.json"),
        r#"{"op":"c","after":{"id":1,"name":"x","amount":1.5,"ok":true},"source":{"ts_ms":1}}"#,
    )
    .unwrap();
    let out = tributary(tmp.path(), &["tables", "landing"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let dms = stdout.lines().find(|l| l.starts_with("s/dms")).unwrap();
    assert!(dms.contains("dms layout"), "no internal names: {dms}");
    assert!(dms.contains("incomplete: `columns`"), "{dms}");
    let dbz = stdout.lines().find(|l| l.starts_with("s/dbz")).unwrap();
    assert!(dbz.contains("debezium layout, 4 columns"), "{dbz}");
    let file = std::fs::read_to_string(landing.join("tables.yaml")).unwrap();
    for column in [
        "name: amount\n    type: double",
        "name: id\n    type: long",
        "name: ok\n    type: boolean",
        "name: name\n    type: string",
    ] {
        assert!(file.contains(column), "{column} in {file}");
    }
    let out = tributary(tmp.path(), &["tables", "landing", "--activate", "s/dms"]);
    assert_eq!(out.status.code(), Some(2));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("cannot activate"), "{errors:?}");
    assert!(errors[0].contains("(s/dms).columns"), "{errors:?}");
    assert_eq!(
        std::fs::read_to_string(landing.join("tables.yaml")).unwrap(),
        file,
        "nothing changed"
    );
    let out = tributary(tmp.path(), &["tables", "landing", "--activate", "s/dbz"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A DMS change row whose values are the column names (`I,id,name`) is a row, not a header.
#[test]
fn a_dms_change_row_of_column_names_is_a_row() {
    let tmp = tempfile::tempdir().unwrap();
    let landing = tmp.path().join("landing");
    let folder = landing.join("s/names");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("20240101-000000000.csv"), "I,id,name\nI,x,y\n").unwrap();
    std::fs::write(
        landing.join("tables.yaml"),
        "tables:\n- source: s/names\n  active: true\n  primary_key: [id]\n  columns:\n  \
         - {name: id, type: string}\n  - {name: name, type: string}\n",
    )
    .unwrap();
    let out = tributary(tmp.path(), &["sync", "landing", "--lake", "lake"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(crate::common::table_rows(
        &tmp.path().join("lake/s/names/current"),
    ));
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["id", "x"], "both change rows are rows: {rows:?}");
}

/// DMS writes a header line when the endpoint sets `AddColumnName=true`: it is read as one.
#[test]
fn a_dms_add_column_name_header_is_read_as_a_header() {
    let tmp = tempfile::tempdir().unwrap();
    let landing = tmp.path().join("landing");
    let folder = landing.join("s/t");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("LOAD00000001.csv"), "id,name\n1,a\n2,b\n").unwrap();
    std::fs::write(
        folder.join("20240102-000000000.csv"),
        "Op,id,name\nU,1,c\nD,2,b\n",
    )
    .unwrap();
    std::fs::write(
        landing.join("tables.yaml"),
        "tables:\n- source: s/t\n  active: true\n  primary_key: [id]\n  columns:\n  \
         - {name: id, type: long}\n  - {name: name, type: string}\n",
    )
    .unwrap();
    let out = tributary(tmp.path(), &["sync", "landing", "--lake", "lake", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = crate::common::json_stdout(&out);
    let table = &summary["tables"][0];
    assert_eq!(table["status"], "applied", "{summary}");
    // Logs to a pipe: a line per stage of each table.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("s.t: read 4 changes from 2 file(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("applied: "), "{stderr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(crate::common::table_rows(
        &tmp.path().join("lake/s/t/current"),
    ));
    let live: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["id"].clone(), r["name"].clone()))
        .collect();
    assert_eq!(live, [("1".to_string(), "c".to_string())], "{rows:?}");
}

/// Logs to a file: no colour codes, one line per stage; `RUST_LOG=debug` is Tributary's.
#[test]
fn logs_to_a_file_have_no_colour_a_line_per_stage_and_debug_is_scoped() {
    let fx = Fixture::new(crate::common::SIMPLE_COLUMNS, "");
    let input = fx.input("d1", "a.csv", b"a,1\nb,2\nc,3\n");
    let out = tributary(
        fx.dir.path(),
        &["run", "config.yaml", input.to_str().unwrap(), "2024-01-01"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes when stderr is not a terminal: {stderr}"
    );
    for stage in ["read: 3 rows", "scan:", "diff:", "write:", "commit: run 1"] {
        assert_eq!(
            stderr.lines().filter(|l| l.contains(stage)).count(),
            1,
            "one `{stage}` line: {stderr}"
        );
    }
    let input = fx.input("d2", "a.csv", b"a,1\nb,5\nd,4\n");
    let out = crate::common::tributary_command(
        fx.dir.path(),
        &["run", "config.yaml", input.to_str().unwrap(), "2024-01-02"],
    )
    .env("RUST_LOG", "debug")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("DEBUG"), "debug lines are shown: {stderr}");
    let foreign: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("DEBUG") && !l.contains("tributary::"))
        .collect();
    assert!(foreign.is_empty(), "libraries' debug lines: {foreign:?}");
}

/// The fenced `sh` blocks of a README section, in order.
fn readme_blocks(section: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let body = readme
        .split(&format!("\n## {section}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has a `## {section}` section"));
    let body = body.split("\n## ").next().unwrap();
    body.split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// The README's getting-started commands run as written, with `tributary` on PATH, and the
/// tables hold what the README says.
#[test]
fn the_readme_getting_started_runs_as_written() {
    let blocks = readme_blocks("Getting started with your own CSV");
    assert_eq!(
        blocks.len(),
        3,
        "the commands, the queries, the Python read: {blocks:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &blocks[0]])
        .current_dir(tmp.path())
        .env("PATH", &path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("customers: ok (4 columns, 1 key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("operations: I 3  U 0  D 0  X 0  N 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("operations: I 1  U 1  D 1  X 0  N 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2024-01-02: already applied from the same input (run 2); nothing to do"),
        "the re-run says so: {stdout}"
    );
    let quickstart = tmp.path().join("quickstart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let current = rt.block_on(crate::common::table_rows(
        &quickstart.join("lake/customers"),
    ));
    let mut live: Vec<(String, String, String)> = current
        .iter()
        .map(|r| (r["id"].clone(), r["city"].clone(), r["operation"].clone()))
        .collect();
    live.sort();
    let row = |id: &str, city: &str, op: &str| (id.to_string(), city.to_string(), op.to_string());
    assert_eq!(
        live,
        [
            row("1", "London", "N"),
            row("2", "Arlington", "U"),
            row("4", "Boston", "I")
        ]
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &blocks[1]])
        .current_dir(&quickstart)
        .env("PATH", &path)
        .output()
        .unwrap();
    let queried = text(&out.stdout);
    assert!(out.status.success(), "{queried}\n{}", text(&out.stderr));
    for row in [
        "| 2  | Arlington | U         |",
        "| 2  | New York  | I         | 2024-01-01     | 2024-01-02   | false      |",
        "| 3  | Austin    | D         | 2024-01-02     |              | false      |",
        "| 3  | Austin   |",
    ] {
        assert!(queried.contains(row), "{row} in {queried}");
    }
    if !crate::common::python_has(
        "first_hour::the_readme_getting_started_runs_as_written",
        &["deltalake", "pyarrow"],
    ) {
        return;
    }
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &blocks[2]])
        .current_dir(&quickstart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("'id': 3, 'city': 'Austin', 'operation': 'D'"),
        "Edsger's delete in history: {printed}"
    );
}
