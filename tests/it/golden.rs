//! Golden query files: `tests/golden/*.slt`, in the sqllogictest format of DataFusion and
//! SQLite, run through `tributary sql` over fixture lakes built here (a multi-day snapshot
//! table, a change-log lake synced file by file).
//!
//! A record is `query <column types> [rowsort]`, the statement, `----` and the expected rows
//! (values separated by one space, `NULL` for null; `rowsort` compares the rows sorted), or
//! `statement error <text>` and the statement, which must exit 2 saying `<text>`. Records are
//! separated by blank lines; `#` starts a comment line.

use std::path::Path;

use crate::common::{tributary_command, Fixture, SIMPLE_COLUMNS};

/// One record of a golden file.
#[derive(Debug)]
struct Record {
    line: usize,
    sql: String,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    Rows { rows: Vec<String>, sort: bool },
    Error(String),
}

fn parse(text: &str) -> Vec<Record> {
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let header: Vec<&str> = line.split_whitespace().collect();
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let expect = match header.first().copied() {
            Some("query") => {
                assert_eq!(
                    lines.get(i).map(|l| l.trim()),
                    Some("----"),
                    "line {start}: no ----"
                );
                i += 1;
                let mut rows = Vec::new();
                while i < lines.len() && !lines[i].trim().is_empty() {
                    rows.push(lines[i].trim_end().to_string());
                    i += 1;
                }
                Expect::Rows {
                    rows,
                    sort: header.get(2) == Some(&"rowsort"),
                }
            }
            Some("statement") if header.get(1) == Some(&"error") => {
                let says = line.splitn(3, ' ').nth(2).unwrap_or("").trim().to_string();
                assert!(
                    !says.is_empty(),
                    "line {start}: `statement error` needs its text"
                );
                Expect::Error(says)
            }
            _ => panic!("line {start}: `{line}` is neither `query` nor `statement error`"),
        };
        records.push(Record {
            line: start,
            sql: sql.join("\n"),
            expect,
        });
    }
    records
}

/// Runs every record of `file` with `tributary sql ARGS --format csv -e SQL` in `dir`;
/// fails listing every record whose result differs.
fn run_golden(file: &str, dir: &Path, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let records = parse(&text);
    assert!(records.len() > 5, "{file}: {records:?}");
    let mut failures = Vec::new();
    for record in &records {
        let mut command_args = vec!["sql"];
        command_args.extend_from_slice(args);
        command_args.extend_from_slice(&["--format", "csv", "-e", &record.sql]);
        let out = tributary_command(dir, &command_args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match &record.expect {
            Expect::Rows { rows, sort } => {
                if !out.status.success() {
                    failures.push(format!("{file}:{}: failed: {stderr}", record.line));
                    continue;
                }
                let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
                let mut got: Vec<String> = reader
                    .records()
                    .map(|r| {
                        r.unwrap()
                            .iter()
                            .map(|v| if v.is_empty() { "NULL" } else { v })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                let mut want = rows.clone();
                if *sort {
                    got.sort();
                    want.sort();
                }
                if got != want {
                    failures.push(format!(
                        "{file}:{}: {}\n  expected:\n    {}\n  got:\n    {}",
                        record.line,
                        record.sql,
                        want.join("\n    "),
                        got.join("\n    ")
                    ));
                }
            }
            Expect::Error(says) => {
                // Past the echoed statement (`statement 1 (`...`): `), so that the text
                // cannot match the query itself.
                let message = stderr.rsplit("`): ").next().unwrap_or(&stderr);
                if out.status.code() != Some(2) || !message.contains(says.as_str()) {
                    failures.push(format!(
                        "{file}:{}: expected exit 2 saying `{says}`, got {:?}: {stderr}",
                        record.line,
                        out.status.code()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Three snapshot days of table `t` ([`SIMPLE_COLUMNS`]): day 1 (2024-01-01) inserts a, b, c;
/// day 2 keeps a, updates b to 5, deletes c, inserts d; day 3 (2024-01-03) inserts e.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_tables_answer_the_golden_queries() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "change_data_feed: true");
    let days = [
        ("2024-01-01", "a,1\nb,2\nc,3\n"),
        ("2024-01-02", "a,1\nb,5\nd,4\n"),
        ("2024-01-03", "a,1\nb,5\nd,4\ne,6\n"),
    ];
    for (date, rows) in days {
        let input = fx.input(date, "part.csv", rows.as_bytes());
        fx.run(&input, date).await.unwrap();
    }
    run_golden("snapshot.slt", fx.dir.path(), &["--config", "config.yaml"]);
}

const ORDERS: &str = "tables:
- source: sales/orders
  active: true
  primary_key: [id]
  timestamp_column: ts
  change_data_feed: true
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
";

/// A DMS landing zone of `sales/orders`, synced file by file: the full load (run 1, run date
/// 2024-02-29), then changes committed on 2024-03-01 (run 2) and on 2024-03-02 (run 3).
#[tokio::test(flavor = "multi_thread")]
async fn change_log_tables_answer_the_golden_queries() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("landing/sales/orders");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(dir.path().join("landing/tables.yaml"), ORDERS).unwrap();
    let files = [
        ("LOAD00000001.csv", "1,east,10\n2,east,20\n3,west,30\n"),
        (
            "20240301-000000001.csv",
            "U,2024-03-01 10:00:00.000000,2,west,21\n\
             D,2024-03-01 10:00:01.000000,3,west,30\n\
             I,2024-03-01 10:00:02.000000,4,east,40\n",
        ),
        (
            "20240302-000000001.csv",
            "U,2024-03-02 09:00:00.000000,4,east,41\n\
             I,2024-03-02 09:00:01.000000,5,west,50\n\
             D,2024-03-02 09:00:02.000000,1,east,10\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(folder.join(name), text).unwrap();
        let args = ["sync", "landing", "--lake", "lake", "--date", "2024-02-29"];
        let out = tributary_command(dir.path(), &args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    run_golden("changelog.slt", dir.path(), &["--lake", "lake"]);
}

#[test]
fn records_parse_with_their_lines() {
    let text =
        "# c\nquery IT rowsort\nSELECT 1,\n  'a'\n----\n1 a\n\nstatement error nope\nSELECT x\n";
    let records = parse(text);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].line, 2);
    assert_eq!(records[0].sql, "SELECT 1,\n  'a'");
    assert!(matches!(&records[0].expect, Expect::Rows { rows, sort: true } if rows == &["1 a"]));
    assert!(matches!(&records[1].expect, Expect::Error(s) if s == "nope"));
}
