//! Tables in an S3-compatible object store: `tributary run` with `s3://` table URLs against a
//! local S3 server, compared with the same runs on local disk.
//!
//! The server is `moto` in server mode (PyPI `moto[server]`), started once per test process on a
//! free port and stopped when the process ends; each test writes under a prefix of its own. It is started
//! single-threaded ([`MOTO`]): moto checks `If-None-Match: *` and stores the object in two steps
//! without a lock, so only requests served one at a time make its conditional PUT atomic, as
//! S3's is (the racing writers' test depends on it). `TRIBUTARY_S3_ENDPOINT=http://HOST:PORT` points the tests at a running server instead
//! (SeaweedFS's `weed server -s3`, MinIO). Without either the tests are skipped with a SKIPPED
//! line on stderr, unless TRIBUTARY_REQUIRE_S3 is set (by .ci/run): then they fail.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};

use url::Url;

use crate::common::{batch_rows, json_stdout, Fixture, SIMPLE_COLUMNS};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
/// The secret the tests' configs hold: no output may show it.
const SECRET: &str = "not-a-real-secret-0451";

/// The S3 endpoint of the tests (`http://127.0.0.1:PORT`), None when there is none.
pub(crate) fn endpoint(test: &str) -> Option<&'static str> {
    static ENDPOINT: OnceLock<Option<String>> = OnceLock::new();
    let found = ENDPOINT.get_or_init(|| {
        if let Ok(given) = std::env::var("TRIBUTARY_S3_ENDPOINT") {
            return Some(given.trim_end_matches('/').to_string());
        }
        start_moto()
    });
    if found.is_none() {
        assert!(
            std::env::var("TRIBUTARY_REQUIRE_S3").is_err(),
            "an S3 server is required (TRIBUTARY_REQUIRE_S3 is set): pip install 'moto[server]'"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no S3 server (pip install 'moto[server]', or set TRIBUTARY_S3_ENDPOINT)"
        );
    }
    found.as_deref()
}

/// moto's server (as `moto_server` runs it) serving one request at a time; argument: the port.
const MOTO: &str = "
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
";

/// Starts moto's server ([`MOTO`]) on a free port, watched by a shell that stops it when this
/// process ends; waits until it answers. None when moto is not installed.
fn start_moto() -> Option<String> {
    let installed = Command::new("python3")
        .args(["-c", "import moto.moto_server.werkzeug_app, werkzeug"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let watch = "python3 -c \"$3\" \"$1\" >/dev/null 2>&1 & m=$!; \
                 while kill -0 \"$2\" 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; \
                 kill $m 2>/dev/null";
    Command::new("sh")
        .args([
            "-c",
            watch,
            "sh",
            &port.to_string(),
            &std::process::id().to_string(),
            MOTO,
        ])
        .spawn()
        .ok()?;
    let address = format!("127.0.0.1:{port}");
    for _ in 0..300 {
        if http(&address, "GET", "/").is_some() {
            return Some(format!("http://{address}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// One plain HTTP/1.1 request without a body; the status code of the answer.
fn http(address: &str, method: &str, path: &str) -> Option<u16> {
    http_with(address, method, path, b"")
}

/// One plain HTTP/1.1 request with `body`; the status code of the answer.
fn http_with(address: &str, method: &str, path: &str, body: &[u8]) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// A new, empty place in a bucket of the server at `endpoint`: `<bucket>/<prefix>`, used where
/// a bucket name goes (`s3://{place}/lake/...`). One bucket per test process: SeaweedFS gives
/// each bucket volumes of its own, and a bucket per test would use up `-volume.max`.
fn bucket(endpoint: &str) -> String {
    static BUCKET: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let bucket = BUCKET.get_or_init(|| {
        let name = format!("tributary-{}", std::process::id());
        let address = endpoint.trim_start_matches("http://");
        // a server just started may answer before it can store (SeaweedFS's filer): retried
        let mut status = None;
        for _ in 0..60 {
            status = http(address, "PUT", &format!("/{name}"));
            if status == Some(200) {
                return name;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("creating bucket {name} at {endpoint}: {status:?}")
    });
    format!("{bucket}/t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Puts `body` at `key` under `place` (a bucket and a prefix, [`bucket`]), a signed request
/// through `object_store` (moto refuses an unsigned PUT over an existing key).
async fn put_object(endpoint: &str, place: &str, key: &str, body: &[u8]) {
    use deltalake::logstore::object_store::ObjectStoreExt;
    let (bucket, prefix) = place.split_once('/').unwrap_or((place, ""));
    let store = deltalake::logstore::store_for(
        &Url::parse(&format!("s3://{bucket}/")).unwrap(),
        options(endpoint),
    )
    .unwrap();
    // the key as it is (`Path::from` would percent-encode a `%` or `#` in it)
    let path = deltalake::Path::parse(format!("{prefix}/{key}").trim_start_matches('/')).unwrap();
    store.put(&path, body.to_vec().into()).await.unwrap();
}

/// The storage options of the tests' configs.
fn options(endpoint: &str) -> HashMap<String, String> {
    HashMap::from([
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
    ])
}

/// A snapshot config `t` with [`SIMPLE_COLUMNS`] and its tables under `s3://<bucket>/lake/`,
/// written into `dir`; returns its path.
fn s3_config(dir: &Path, endpoint: &str, bucket: &str) -> std::path::PathBuf {
    let mut text = format!(
        "name: t\ncurrent_table_path: s3://{bucket}/lake/current\n\
         history_table_path: s3://{bucket}/lake/history\nextract_type: full\n"
    );
    text.push_str(&options_yaml(endpoint));
    text.push_str("columns:\n");
    text.push_str(SIMPLE_COLUMNS);
    let path = dir.join("s3.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `storage_options:` section of the tests' configs and tables files (YAML).
fn options_yaml(endpoint: &str) -> String {
    let mut options: Vec<_> = options(endpoint).into_iter().collect();
    options.sort();
    let mut text = String::from("storage_options:\n");
    for (key, value) in options {
        text.push_str(&format!("  {key}: \"{value}\"\n"));
    }
    text
}

/// Asserts that the current and history tables under `s3://{place}/lake/` hold the rows of
/// `local`'s.
async fn assert_s3_tables_equal(place: &str, endpoint: &str, local: &Fixture) {
    for role in ["current", "history"] {
        let url = format!("s3://{place}/lake/{role}/");
        assert_eq!(
            rows(&url, endpoint).await,
            sorted_local(local, role).await,
            "{role}"
        );
    }
}

/// `tributary run CONFIG INPUT DATE --json`, with no AWS or Google settings from the environment.
fn run(config: &Path, input: &Path, date: &str, crash_at: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        config.to_str().unwrap(),
        input.to_str().unwrap(),
        date,
        "--json",
    ]);
    for var in [
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_BUCKET",
    ] {
        cmd.env_remove(var);
    }
    if let Some(point) = crash_at {
        cmd.env("TRIBUTARY_CRASH_AT", point);
    }
    cmd.output().unwrap()
}

/// Day `d` (1-based) of 200 keys: some gone, some changed, some back.
fn day_csv(d: u32) -> String {
    (0..200u32)
        .filter(|i| !(i * 3 + d).is_multiple_of(7))
        .map(|i| format!("k{i},{}\n", if (i + d).is_multiple_of(4) { d } else { 0 }))
        .collect()
}

/// The rows of the table at `url` (on the test server) as column -> value maps, sorted.
async fn rows(url: &str, endpoint: &str) -> Vec<BTreeMap<String, String>> {
    let table =
        deltalake::open_table_with_storage_options(Url::parse(url).unwrap(), options(endpoint))
            .await
            .unwrap();
    let batches = tributary::sink::delta::scan(&table).await.unwrap();
    let mut rows: Vec<_> = batches.iter().flat_map(batch_rows).collect();
    rows.sort();
    rows
}

/// The run numbers (`seq`) of the Tributary commits of the table at `url`, oldest first.
async fn logged_runs(url: &str, endpoint: &str) -> Vec<i64> {
    let table =
        deltalake::open_table_with_storage_options(Url::parse(url).unwrap(), options(endpoint))
            .await
            .unwrap();
    use futures::TryStreamExt;
    let commits: Vec<_> = table.history(None).try_collect().await.unwrap();
    // newest first: the run numbers in commit order
    commits
        .iter()
        .rev()
        .filter_map(|commit| commit.info.get("tributary")?.get("seq")?.as_i64())
        .collect()
}

async fn sorted_local(fx: &Fixture, role: &str) -> Vec<BTreeMap<String, String>> {
    let mut rows = fx.rows(role).await;
    rows.sort();
    rows
}

/// Three days on S3 and on local disk: the same summaries and the same tables, a repeated
/// day is a no-op, `tributary sql` queries the S3 tables, and no output shows the secret. The
/// third day's extract is read from the bucket too (a prefix of two objects, and one object
/// for `tributary check`).
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_runs_on_s3_equal_the_same_runs_on_local_disk() {
    let Some(endpoint) =
        endpoint("object_store::snapshot_runs_on_s3_equal_the_same_runs_on_local_disk")
    else {
        return;
    };
    let bucket = bucket(endpoint);
    let local = Fixture::new(SIMPLE_COLUMNS, "");
    let config = s3_config(local.dir.path(), endpoint, &bucket);
    for d in 1..=3u32 {
        let input = local.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes());
        let date = format!("2024-01-{d:02}");
        let out = if d < 3 {
            run(&config, &input, &date, None)
        } else {
            // the same rows in two objects, and a sub-folder that is not read
            let text = day_csv(d);
            let middle = text[..text.len() / 2].rfind('\n').unwrap() + 1;
            let (first, rest) = text.split_at(middle);
            put_object(endpoint, &bucket, "in/d3/a.csv", first.as_bytes()).await;
            put_object(endpoint, &bucket, "in/d3/b.csv", rest.as_bytes()).await;
            put_object(endpoint, &bucket, "in/d3/old/a.csv", b"zz,1\n").await;
            let checked = Command::new(BIN)
                .args(["check", config.to_str().unwrap(), "--json"])
                .arg(format!("s3://{bucket}/in/d3/a.csv"))
                .output()
                .unwrap();
            let lines = first.lines().count() as u64;
            assert_eq!(json_stdout(&checked)["rows_read"], lines);
            run(
                &config,
                Path::new(&format!("s3://{bucket}/in/d3/")),
                &date,
                None,
            )
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(SECRET), "{stderr}");
        let on_s3 = json_stdout(&out);
        let on_disk = local.run(&input, &date).await.unwrap();
        assert_eq!(on_s3["status"], "applied", "{on_s3}");
        assert_eq!(
            on_s3["counts"],
            serde_json::to_value(on_disk.counts).unwrap()
        );
    }
    assert_s3_tables_equal(&bucket, endpoint, &local).await;
    assert_eq!(
        logged_runs(&format!("s3://{bucket}/lake/history/"), endpoint).await,
        vec![1, 2, 3]
    );
    // the same day from the same objects again: nothing new
    let input = format!("s3://{bucket}/in/d3/");
    let again = json_stdout(&run(&config, Path::new(&input), "2024-01-03", None));
    assert_eq!(again["status"], "no-op", "{again}");

    let out = Command::new(BIN)
        .args([
            "sql",
            "--format",
            "csv",
            "--config",
            config.to_str().unwrap(),
            "-e",
        ])
        .arg("SELECT operation, count(*) AS n FROM t GROUP BY operation ORDER BY operation")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = BTreeMap::<String, usize>::new();
    for row in sorted_local(&local, "current").await {
        *expected.entry(row["operation"].clone()).or_default() += 1;
    }
    for (op, n) in expected {
        assert!(
            stdout.contains(&format!("{op},{n}")),
            "{op}: {n} in {stdout}"
        );
    }
}

/// A run killed after its history commit is completed by the next run on S3, as on disk.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_between_its_s3_commits_is_completed_by_the_next() {
    let Some(endpoint) =
        endpoint("object_store::a_run_killed_between_its_s3_commits_is_completed_by_the_next")
    else {
        return;
    };
    let bucket = bucket(endpoint);
    let local = Fixture::new(SIMPLE_COLUMNS, "");
    let config = s3_config(local.dir.path(), endpoint, &bucket);
    let day1 = local.input("d1", "a.csv", day_csv(1).as_bytes());
    let day2 = local.input("d2", "a.csv", day_csv(2).as_bytes());
    json_stdout(&run(&config, &day1, "2024-01-01", None));
    local.run(&day1, "2024-01-01").await.unwrap();
    let crashed = run(&config, &day2, "2024-01-02", Some("after-history-commit"));
    assert!(!crashed.status.success());
    let resumed = json_stdout(&run(&config, &day2, "2024-01-02", None));
    assert_eq!(resumed["recovered"]["completed_run"], 2, "{resumed}");
    assert_eq!(resumed["status"], "no-op", "{resumed}");
    local.run(&day2, "2024-01-02").await.unwrap();
    assert_s3_tables_equal(&bucket, endpoint, &local).await;
}

/// Three processes running days on one S3 table at once: every run number once, and the tables
/// equal a serial replay on disk of the runs that applied, in run order. Commits are
/// conditional PUTs (`If-None-Match: *`): a process that loses one re-plans or is refused.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runs_on_one_s3_table_commit_each_run_once() {
    let Some(endpoint) =
        endpoint("object_store::concurrent_runs_on_one_s3_table_commit_each_run_once")
    else {
        return;
    };
    let bucket = bucket(endpoint);
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let config = s3_config(fx.dir.path(), endpoint, &bucket);
    let inputs: Vec<_> = (1..=3u32)
        .map(|d| fx.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes()))
        .collect();
    let jobs = [vec![0, 1, 2], vec![0, 2, 1], vec![1, 0, 2]];
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|list| {
            let (barrier, config, inputs) = (barrier.clone(), config.clone(), inputs.clone());
            std::thread::spawn(move || {
                barrier.wait();
                list.into_iter()
                    .map(|k| {
                        let date = format!("2024-01-{:02}", k + 1);
                        let out = run(&config, &inputs[k], &date, None);
                        (date, out)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<(String, Output)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    let mut applied = BTreeMap::new();
    for (date, out) in &outcomes {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if json["status"] == "applied" {
                    let seq = json["run_seq"].as_i64().unwrap();
                    assert!(
                        applied.insert(seq, date.clone()).is_none(),
                        "run {seq} twice"
                    );
                } else {
                    assert_eq!(json["status"], "no-op", "{json}");
                }
            }
            Some(3) => assert!(
                stderr.contains("older than the latest applied date")
                    || stderr.contains("conflict:"),
                "a refusal names its rule: {stderr}"
            ),
            other => panic!("{date}: exit {other:?}: {stderr}"),
        }
    }
    let history = format!("s3://{bucket}/lake/history/");
    let logged = logged_runs(&history, endpoint).await;
    assert_eq!(logged, applied.keys().copied().collect::<Vec<_>>());
    assert_eq!(logged, (1..=logged.len() as i64).collect::<Vec<_>>());

    let replay = Fixture::new(SIMPLE_COLUMNS, "");
    for date in applied.values() {
        let d: u32 = date[8..].parse().unwrap();
        let input = replay.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes());
        replay.run(&input, date).await.unwrap();
    }
    assert_s3_tables_equal(&bucket, endpoint, &replay).await;
}

/// The Python `deltalake` package reads the tables a run wrote to S3.
#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_the_s3_tables() {
    let test = "object_store::python_deltalake_reads_the_s3_tables";
    let Some(endpoint) = endpoint(test) else {
        return;
    };
    if !crate::common::python_readers(test) {
        return;
    }
    let bucket = bucket(endpoint);
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let config = s3_config(fx.dir.path(), endpoint, &bucket);
    for d in 1..=2u32 {
        let input = fx.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes());
        json_stdout(&run(&config, &input, &format!("2024-01-{d:02}"), None));
    }
    let script = r#"
import os, sys, json, deltalake
options = json.loads(sys.argv[2])
out = {}
for role in ["current", "history"]:
    t = deltalake.DeltaTable(f"s3://{sys.argv[1]}/lake/{role}", storage_options=options)
    data = t.to_pyarrow_table()
    out[role] = sorted(zip(data.column("id").to_pylist(), data.column("operation").to_pylist()))
print(json.dumps(out), flush=True)
# leave without the interpreter's teardown: deltalake's runtime threads, still closing their
# connections to the test server, would abort it ("terminate called without an active
# exception")
os._exit(0)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &bucket])
        .arg(serde_json::to_string(&options(endpoint)).unwrap())
        .output()
        .unwrap();
    let seen = json_stdout(&out);
    for role in ["current", "history"] {
        let url = format!("s3://{bucket}/lake/{role}/");
        let mut expected: Vec<(String, String)> = rows(&url, endpoint)
            .await
            .into_iter()
            .map(|r| (r["id"].clone(), r["operation"].clone()))
            .collect();
        expected.sort();
        assert_eq!(seen[role], serde_json::json!(expected), "{role}");
    }
}

/// A bucket that does not exist and a store no URL scheme names fail before anything is
/// written, with errors that name the bucket or the field and never show the secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_or_an_unknown_store_is_a_clear_error() {
    let Some(endpoint) =
        endpoint("object_store::a_missing_bucket_or_an_unknown_store_is_a_clear_error")
    else {
        return;
    };
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let input = fx.input("d1", "a.csv", day_csv(1).as_bytes());
    let config = s3_config(fx.dir.path(), endpoint, "no-such-bucket-4711");
    let out = run(&config, &input, "2024-01-01", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`no-such-bucket-4711` does not exist"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET) && !stderr.contains("panicked"),
        "{stderr}"
    );

    let text = std::fs::read_to_string(&config).unwrap().replace(
        "s3://no-such-bucket-4711/lake/current",
        "ftp://host/current",
    );
    std::fs::write(&config, text).unwrap();
    let out = run(&config, &input, "2024-01-01", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("current_table_path")
            && stderr.contains("`ftp://` is not a supported store"),
        "{stderr}"
    );
}

/// `tributary sync --lake s3://...` with the tables file's `storage_options`, in two passes,
/// against the same syncs into a local lake: the same tables; `tributary sql --lake s3://...`
/// (the store's settings from the environment) finds and queries the synced table.
#[tokio::test(flavor = "multi_thread")]
async fn sync_into_an_s3_lake_equals_a_local_lake() {
    let Some(endpoint) = endpoint("object_store::sync_into_an_s3_lake_equals_a_local_lake") else {
        return;
    };
    sync_into_s3_and_local(endpoint, crate::concurrency::ORDERS, "lake").await;
}

/// The same with `deletion_vectors: true`: the merges write their vectors to the bucket and
/// read the earlier ones back by byte range.
#[tokio::test(flavor = "multi_thread")]
async fn sync_with_deletion_vectors_into_an_s3_lake_equals_a_local_lake() {
    let name = "object_store::sync_with_deletion_vectors_into_an_s3_lake_equals_a_local_lake";
    let Some(endpoint) = endpoint(name) else {
        return;
    };
    // (a table that records the change data feed rewrites files instead)
    let tables = crate::concurrency::ORDERS
        .replace("  change_data_feed: true\n", "  deletion_vectors: true\n");
    assert_ne!(tables, crate::concurrency::ORDERS);
    let (_dir, local_lake) = sync_into_s3_and_local(endpoint, &tables, "lake-vectors").await;
    let current = local_lake.join("sales/orders/current");
    let (marked, _) = crate::common::deletion_vectors_of(&current).await;
    assert!(marked > 0, "the local lake's merges gave no file a vector");
}

/// Syncs the DMS files of `concurrency` with `tables` (a tables-file entry) in two rounds into
/// `s3://BUCKET/{prefix}` and a local lake, asserts equal summaries and tables, and a count
/// through `tributary sql` on the bucket. Returns the local lake and the folder that holds it.
async fn sync_into_s3_and_local(
    endpoint: &str,
    entry: &str,
    prefix: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let bucket = bucket(endpoint);
    let dir = tempfile::tempdir().unwrap();
    let (landing, local_lake) = (dir.path().join("landing"), dir.path().join("lake"));
    std::fs::create_dir_all(&landing).unwrap();
    let mut tables = options_yaml(endpoint);
    tables.push_str(entry);
    std::fs::write(landing.join("tables.yaml"), tables).unwrap();
    let s3_lake = format!("s3://{bucket}/{prefix}");
    let files = crate::concurrency::dms_files(4);
    let sync = |lake: &str| {
        let out = Command::new(BIN)
            .arg("sync")
            .arg(&landing)
            .args(["--lake", lake, "--date", "2024-02-01", "--json"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(SECRET), "{stderr}");
        let json = json_stdout(&out);
        assert_eq!(json["failed"], 0, "{json}");
        json["tables"][0]["files"].as_u64().unwrap()
    };
    for (round, range) in [(0, 0..3), (1, 3..files.len())] {
        for (i, (rel, text)) in files[range].iter().enumerate() {
            let secs = 1_700_000_000 + (round * 10 + i) as u64;
            crate::concurrency::deliver(&landing, rel, text, secs);
        }
        assert_eq!(sync(&s3_lake), sync(local_lake.to_str().unwrap()));
    }
    for role in ["current", "history"] {
        let url = format!("{s3_lake}/sales/orders/{role}/");
        let mut local =
            crate::common::table_rows(&local_lake.join("sales/orders").join(role)).await;
        local.sort();
        assert_eq!(rows(&url, endpoint).await, local, "{role}");
    }

    let mut sql = Command::new(BIN);
    sql.args(["sql", "--format", "csv", "--lake", &s3_lake, "-e"])
        .arg("SELECT count(*) AS n FROM sales.orders");
    for (key, value) in options(endpoint) {
        sql.env(key, value);
    }
    let out = sql.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = crate::common::table_rows(&local_lake.join("sales/orders/current"))
        .await
        .len();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().nth(1),
        Some(live.to_string().as_str()),
        "{stdout}"
    );
    (dir, local_lake)
}

/// The config's `catalog` (AWS Glue, moto's Glue API on the test server): a run creates the
/// database and the two tables (location, columns, partition keys, Delta parameters); an
/// unreachable catalog leaves the next run committed, says so, and exits 6; a column added to
/// the Delta tables (as `capture` adds one) reaches the catalog at the next registration.
#[tokio::test(flavor = "multi_thread")]
async fn runs_register_their_tables_in_glue() {
    let Some(endpoint) = endpoint("object_store::runs_register_their_tables_in_glue") else {
        return;
    };
    if std::env::var("TRIBUTARY_S3_ENDPOINT").is_ok() {
        // a given server (SeaweedFS, MinIO) serves no Glue API
        return;
    }
    let bucket = bucket(endpoint);
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let config = s3_config(fx.dir.path(), endpoint, &bucket);
    let database = format!("db_{}", bucket.replace(['-', '/'], "_"));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "columns:\n",
        &format!(
            "catalog: {{type: glue, database: {database}, region: us-east-1, endpoint: '{endpoint}'}}\ncolumns:\n"
        ),
    );
    std::fs::write(&config, &text).unwrap();
    let glue_env = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env_remove("AWS_PROFILE");
    };
    let day1 = fx.input("d1", "a.csv", day_csv(1).as_bytes());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        config.to_str().unwrap(),
        day1.to_str().unwrap(),
        "2024-01-01",
        "--json",
    ]);
    glue_env(&mut cmd);
    let out = cmd.output().unwrap();
    let json = json_stdout(&out);
    assert_eq!(
        json["catalog"]["tables"],
        serde_json::json!([format!("{database}.t"), format!("{database}.t_history")]),
        "{json}"
    );

    let glue = aws_sdk_glue::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_glue::config::Credentials::new(
                "testing", SECRET, None, None, "test",
            ))
            .load()
            .await,
    );
    let table = |name: &str| {
        let (glue, database, name) = (glue.clone(), database.clone(), name.to_string());
        async move {
            glue.get_table()
                .database_name(&database)
                .name(&name)
                .send()
                .await
                .unwrap()
                .table
                .unwrap()
        }
    };
    let columns = |t: &aws_sdk_glue::types::Table| -> Vec<(String, String)> {
        let sd = t.storage_descriptor().unwrap();
        sd.columns()
            .iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    c.r#type().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let current = table("t").await;
    assert_eq!(
        current.storage_descriptor().unwrap().location(),
        Some(format!("s3://{bucket}/lake/current").as_str())
    );
    let names: Vec<String> = columns(&current).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.starts_with(&["id".to_string(), "v".to_string()]),
        "{names:?}"
    );
    assert!(
        names.contains(&"keyhash".to_string()) && names.contains(&"eff_start_date".to_string())
    );
    assert_eq!(current.parameters().unwrap()["table_type"], "DELTA");
    assert!(current.partition_keys().is_empty());
    let history = table("t_history").await;
    let keys: Vec<(&str, Option<&str>)> = history
        .partition_keys()
        .iter()
        .map(|c| (c.name(), c.r#type()))
        .collect();
    assert_eq!(keys, [("eff_start_date", Some("date"))]);
    assert!(!columns(&history).iter().any(|(n, _)| n == "eff_start_date"));

    // registering again with nothing changed makes no new catalog version
    let versions = |name: &str| {
        let (glue, database, name) = (glue.clone(), database.clone(), name.to_string());
        async move {
            glue.get_table_versions()
                .database_name(&database)
                .table_name(&name)
                .send()
                .await
                .unwrap()
                .table_versions()
                .len()
        }
    };
    let before = versions("t").await;
    let mut cmd = Command::new(BIN);
    cmd.args(["register", "--config", config.to_str().unwrap()]);
    glue_env(&mut cmd);
    assert!(cmd.output().unwrap().status.success());
    assert_eq!(versions("t").await, before);

    // an unreachable catalog: the run commits, says so, exits 6
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        text.replace(
            &format!("endpoint: '{endpoint}'}}"),
            &format!("endpoint: 'http://127.0.0.1:{port}'}}"),
        ),
    )
    .unwrap();
    let day2 = fx.input("d2", "a.csv", day_csv(2).as_bytes());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        config.to_str().unwrap(),
        day2.to_str().unwrap(),
        "2024-01-02",
        "--json",
    ]);
    glue_env(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("the run is committed") && !stderr.contains(SECRET),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "applied");
    assert!(json["catalog"]["error"].as_str().is_some(), "{json}");
    assert_eq!(
        logged_runs(&format!("s3://{bucket}/lake/history/"), endpoint).await,
        vec![1, 2]
    );
    // a column added to the tables (as capture adds one) reaches the catalog
    std::fs::write(&config, &text).unwrap();
    let spec = tributary::config::TableConfig::load(&config).unwrap().table;
    tributary::sink::storage::register_lake(&spec.lake);
    let mut fields: Vec<_> = spec.table_schema().fields().iter().cloned().collect();
    let at = fields.iter().position(|f| f.name() == "keyhash").unwrap();
    fields.insert(
        at,
        std::sync::Arc::new(deltalake::arrow::datatypes::Field::new(
            "note",
            deltalake::arrow::datatypes::DataType::Utf8,
            true,
        )),
    );
    let wider = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
    for (url, role) in [
        (&spec.lake.current_url, tributary::sink::TableRole::Current),
        (&spec.lake.history_url, tributary::sink::TableRole::History),
    ] {
        let added = tributary::sink::delta::add_columns(url, &wider, role)
            .await
            .unwrap();
        assert_eq!(added, ["note"]);
    }
    // `tributary register` registers them now, as the next run would
    let mut cmd = Command::new(BIN);
    cmd.args(["register", "--config", config.to_str().unwrap(), "--json"]);
    glue_env(&mut cmd);
    let done = json_stdout(&cmd.output().unwrap());
    assert_eq!(
        done[0]["tables"].as_array().map(Vec::len),
        Some(2),
        "{done}"
    );
    let current = table("t").await;
    assert!(columns(&current).contains(&("note".to_string(), "string".to_string())));
    let version = tributary::sink::storage::open(&spec.lake.current_url)
        .await
        .unwrap()
        .version()
        .unwrap();
    assert_eq!(
        current.parameters().unwrap()["tributary.delta.version"],
        version.to_string()
    );
}

/// `tributary sync s3://.../landing --tables FILE`: a DMS landing zone in the bucket (objects
/// only, past one listing page of 1,000 keys, hidden objects beside them) loads as the same
/// files in a local folder do; a `LOAD` object uploaded again with the same bytes is no reload.
#[tokio::test(flavor = "multi_thread")]
async fn sync_from_an_s3_landing_zone_equals_a_local_one() {
    let Some(endpoint) = endpoint("object_store::sync_from_an_s3_landing_zone_equals_a_local_one")
    else {
        return;
    };
    let place = bucket(endpoint);
    let dir = tempfile::tempdir().unwrap();
    let (local_landing, tables) = (dir.path().join("landing"), dir.path().join("tables.yaml"));
    std::fs::create_dir_all(&local_landing).unwrap();
    let mut text = options_yaml(endpoint);
    text.push_str(crate::concurrency::ORDERS);
    std::fs::write(&tables, &text).unwrap();
    std::fs::write(local_landing.join("tables.yaml"), &text).unwrap();
    let mut files = crate::concurrency::dms_files(1_001);
    // a date folder whose name holds what keys percent-encode (Hive's escaping, a `#`)
    files.push((
        "sales/orders/dt=2024-01-01 00%3A00 #2/20240101-999999999.csv".to_string(),
        "I,5000,east,1\nU,5000,west,2\n".to_string(),
    ));
    let s3_landing = format!("s3://{place}/landing");
    let spill = dir.path().join("spill");
    let sync = |landing: &str, lake: &Path| {
        let out = Command::new(BIN)
            .args([
                "sync",
                landing,
                "--tables",
                tables.to_str().unwrap(),
                "--lake",
            ])
            .arg(lake)
            .arg("--spill-dir")
            .arg(&spill)
            .args(["--date", "2024-02-01", "--json"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(SECRET), "{stderr}");
        let json = json_stdout(&out);
        assert_eq!(json["failed"], 0, "{json}");
        let table = &json["tables"][0];
        // what a pass copies from the bucket: every file it reads, nothing else
        let copied = &table["copied"];
        assert_eq!(copied.is_object(), landing.starts_with("s3://"), "{table}");
        if copied.is_object() {
            // `files` counts superseded files too, which are recorded, never read
            let read =
                table["files"].as_u64().unwrap() - table["superseded_files"].as_u64().unwrap();
            assert_eq!(copied["objects"].as_u64(), Some(read), "{table}");
        }
        (
            table["files"].as_u64().unwrap(),
            table["reload"].as_bool().unwrap(),
        )
    };
    let (s3_lake, local_lake) = (dir.path().join("lake-s3"), dir.path().join("lake-local"));
    put_object(endpoint, &place, "landing/sales/orders/_SUCCESS", b"").await;
    put_object(endpoint, &place, "landing/sales/orders/.part.crc", b"x").await;
    for (round, range) in [(0, 0..3), (1, 3..files.len())] {
        for (i, (rel, text)) in files[range].iter().enumerate() {
            put_object(endpoint, &place, &format!("landing/{rel}"), text.as_bytes()).await;
            let secs = 1_700_000_000 + (round * 10_000 + i) as u64;
            crate::concurrency::deliver(&local_landing, rel, text, secs);
        }
        if round == 1 {
            // the full load uploaded again, same bytes: not a reload, known by its ETag
            // without copying it (the pass copies only the files it reads)
            let (rel, text) = &files[0];
            put_object(endpoint, &place, &format!("landing/{rel}"), text.as_bytes()).await;
        }
        let on_s3 = sync(&s3_landing, &s3_lake);
        assert_eq!(on_s3, sync(local_landing.to_str().unwrap(), &local_lake));
        assert!(!on_s3.1 || round == 0, "round {round}: {on_s3:?}");
        if round == 1 {
            assert_eq!(
                on_s3.0 as usize,
                files.len() - 3,
                "every file past the first page of the listing"
            );
        }
    }
    // the passes' copies went to --spill-dir, and went with the passes
    let left: Vec<_> = std::fs::read_dir(&spill).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    for role in ["current", "history", "applied"] {
        let rows = |lake: &Path| {
            let path = lake.join("sales/orders").join(role);
            let from_s3 = lake == s3_lake;
            async move {
                let mut rows = crate::common::table_rows(&path).await;
                for row in &mut rows {
                    // when a file was applied and how old it is differ between the two landings
                    row.remove("modified_ms");
                    row.remove("applied_at");
                    // objects are recorded with their ETag, local files without
                    let etag = row.remove("etag");
                    if role == "applied" {
                        let recorded = etag.is_some_and(|e| e != "<null>" && !e.is_empty());
                        assert_eq!(recorded, from_s3, "{row:?}");
                    }
                }
                rows.sort();
                rows
            }
        };
        let (on_s3, local) = (rows(&s3_lake).await, rows(&local_lake).await);
        let only_s3: Vec<_> = on_s3.iter().filter(|r| !local.contains(r)).collect();
        let only_local: Vec<_> = local.iter().filter(|r| !on_s3.contains(r)).collect();
        assert!(
            only_s3.is_empty() && only_local.is_empty(),
            "{role}: only from S3 {only_s3:?}, only from the local folder {only_local:?}"
        );
    }
}

/// Azurite (npm `azurite`, Azure Blob Storage's emulator) on a free port, watched by a shell that
/// stops it when this process ends, with container `lake` made (Python `azure-storage-blob`).
/// None when either is missing: the Azure test is then skipped.
fn azurite() -> Option<&'static str> {
    static ENDPOINT: OnceLock<Option<String>> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let data = std::env::temp_dir().join(format!("tributary-azurite-{}", std::process::id()));
            let watch = "azurite-blob --blobHost 127.0.0.1 --blobPort \"$1\" --location \"$3\" \
                         --skipApiVersionCheck --loose >/dev/null 2>&1 & a=$!; \
                         while kill -0 \"$2\" 2>/dev/null && kill -0 $a 2>/dev/null; do sleep 1; done; \
                         kill $a 2>/dev/null; wait $a 2>/dev/null; rm -rf \"$3\" 2>/dev/null";
            Command::new("sh")
                .args(["-c", watch, "sh", &port.to_string(), &std::process::id().to_string()])
                .arg(&data)
                .spawn()
                .ok()?;
            let create = format!(
                "import time\nfrom azure.storage.blob import BlobServiceClient\n\
                 c = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
                 AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
                 BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;')\n\
                 for _ in range(100):\n    try:\n        c.create_container('lake'); break\n    \
                 except Exception:\n        time.sleep(0.2)\nelse:\n    raise SystemExit(1)\n"
            );
            let made = Command::new("python3").args(["-c", &create]).output().ok()?;
            made.status
                .success()
                .then(|| format!("http://127.0.0.1:{port}"))
        })
        .as_deref()
}

/// Two days with the tables in Azure Blob Storage (`az://`, Azurite) equal the same days on
/// local disk, and `tributary sql` reads them. (`object_store` takes the emulator's address
/// from `AZURITE_BLOB_STORAGE_URL` only, so the processes get it in their environment.)
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_runs_on_azure_blob_storage_equal_local_runs() {
    let Some(endpoint) = azurite() else {
        assert!(
            std::env::var("TRIBUTARY_REQUIRE_AZURE").is_err(),
            "Azurite is required (TRIBUTARY_REQUIRE_AZURE is set)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED object_store::snapshot_runs_on_azure_blob_storage_equal_local_runs: no \
             Azurite (npm install -g azurite) or no azure-storage-blob (pip)"
        );
        return;
    };
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let config = fx.dir.path().join("azure.yaml");
    let text = format!(
        "name: t\ncurrent_table_path: az://lake/{id}/current\n\
         history_table_path: az://lake/{id}/history\nextract_type: full\nstorage_options:\n  \
         AZURE_STORAGE_USE_EMULATOR: \"true\"\n  AZURE_STORAGE_ACCOUNT_NAME: devstoreaccount1\n\
         columns:\n{SIMPLE_COLUMNS}",
        id = std::process::id()
    );
    std::fs::write(&config, text).unwrap();
    for d in 1..=2u32 {
        let input = fx.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes());
        let date = format!("2024-01-{d:02}");
        let on_azure = json_stdout(
            &Command::new(BIN)
                .args([
                    "run",
                    config.to_str().unwrap(),
                    input.to_str().unwrap(),
                    &date,
                    "--json",
                ])
                .env("AZURITE_BLOB_STORAGE_URL", endpoint)
                .output()
                .unwrap(),
        );
        let on_disk = fx.run(&input, &date).await.unwrap();
        assert_eq!(
            on_azure["counts"],
            serde_json::to_value(on_disk.counts).unwrap()
        );
    }
    let out = Command::new(BIN)
        .args([
            "sql",
            "--format",
            "csv",
            "--config",
            config.to_str().unwrap(),
            "-e",
        ])
        .arg("SELECT id, v, operation FROM t ORDER BY id")
        .env("AZURITE_BLOB_STORAGE_URL", endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = vec!["id,v,operation".to_string()];
    let mut local = sorted_local(&fx, "current").await;
    local.sort_by(|a, b| a["id"].cmp(&b["id"]));
    expected.extend(
        local
            .iter()
            .map(|r| format!("{},{},{}", r["id"], r["v"], r["operation"])),
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, expected);
}

/// A stand-in for Google Cloud Storage's XML API on a local port (no emulator of it runs
/// here: `gcp-storage-emulator` answers its JSON API only): it answers every request with
/// `status` and an XML error of `code`, and records each request line.
fn gcs_stub(
    status: &'static str,
    code: &'static str,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let body = format!(
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>\
                 <Message>{code}</Message></Error>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (address, seen)
}

/// `gs://` tables reach Google Cloud Storage through the config's `storage_options` (a service
/// account file naming the store's address, as `object_store` reads it), and what the store
/// refuses is explained by bucket, with Google's credential variables: a missing bucket, then
/// access denied. Nothing is written, and the run exits with an error, never a panic.
#[test]
fn gcs_tables_take_their_storage_options_and_explain_refusals() {
    for (status, code, expected) in [
        (
            "404 Not Found",
            "NoSuchBucket",
            "the bucket `gcs-bucket-4711` does not exist",
        ),
        (
            "403 Forbidden",
            "AccessDenied",
            "access denied to gs://gcs-bucket-4711",
        ),
    ] {
        let (address, seen) = gcs_stub(status, code);
        let fx = Fixture::new(SIMPLE_COLUMNS, "");
        let account = fx.dir.path().join("service-account.json");
        std::fs::write(
            &account,
            format!(
                r#"{{"private_key": "{SECRET}", "private_key_id": "k", "client_email": "t@example.com", "gcs_base_url": "{address}", "disable_oauth": true}}"#
            ),
        )
        .unwrap();
        let config = fx.dir.path().join("gcs.yaml");
        std::fs::write(
            &config,
            format!(
                "name: t\ncurrent_table_path: gs://gcs-bucket-4711/lake/current\n\
                 history_table_path: gs://gcs-bucket-4711/lake/history\nextract_type: full\n\
                 storage_options:\n  GOOGLE_SERVICE_ACCOUNT: {}\ncolumns:\n{SIMPLE_COLUMNS}",
                account.display()
            ),
        )
        .unwrap();
        let input = fx.input("d1", "a.csv", day_csv(1).as_bytes());
        let out = run(&config, &input, "2024-01-01", None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{code}: {stderr}");
        if code == "AccessDenied" {
            assert!(
                stderr.contains("GOOGLE_SERVICE_ACCOUNT") && !stderr.contains("AWS_"),
                "{stderr}"
            );
        }
        assert!(
            !stderr.contains(SECRET) && !stderr.contains("panicked"),
            "{stderr}"
        );
        // the requests went to the address of the options, for the bucket of the URL (its
        // `-` percent-encoded by `object_store`)
        let seen = seen.lock().unwrap().clone();
        assert!(
            !seen.is_empty()
                && seen
                    .iter()
                    .all(|l| l.replace("%2D", "-").contains(" /gcs-bucket-4711")),
            "{seen:?}"
        );
    }
}

/// A sync with both the landing zone and the lake in the bucket, aborted at each commit point
/// (before history's commit, after it, between the followers' commits) and run again, ends as
/// an uninterrupted sync of the same files on local disk does; a third pass has nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_at_any_commit_point_on_s3_ends_like_an_uninterrupted_one() {
    let Some(endpoint) = endpoint(
        "object_store::a_sync_killed_at_any_commit_point_on_s3_ends_like_an_uninterrupted_one",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables.yaml");
    let mut text = options_yaml(endpoint);
    text.push_str(crate::concurrency::ORDERS);
    std::fs::write(&tables, &text).unwrap();
    let files = crate::concurrency::dms_files(4);
    let sync = |landing: &str, lake: &str, crash_at: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "sync",
            landing,
            "--tables",
            tables.to_str().unwrap(),
            "--lake",
            lake,
        ])
        .args(["--date", "2024-02-01", "--json"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
        if let Some(point) = crash_at {
            cmd.env("TRIBUTARY_CRASH_AT", point);
        }
        cmd.output().unwrap()
    };
    // the uninterrupted sync, on disk
    let local_landing = dir.path().join("landing");
    for (i, (rel, text)) in files.iter().enumerate() {
        crate::concurrency::deliver(&local_landing, rel, text, 1_700_000_000 + i as u64);
    }
    let local_lake = dir.path().join("lake");
    let out = sync(
        local_landing.to_str().unwrap(),
        local_lake.to_str().unwrap(),
        None,
    );
    assert_eq!(json_stdout(&out)["failed"], 0);
    for point in [
        "before-history-commit",
        "after-history-commit",
        "between-follower-commits",
    ] {
        let place = bucket(endpoint);
        for (rel, text) in &files {
            put_object(endpoint, &place, &format!("landing/{rel}"), text.as_bytes()).await;
        }
        let (landing, lake) = (
            format!("s3://{place}/landing"),
            format!("s3://{place}/lake"),
        );
        let crashed = sync(&landing, &lake, Some(point));
        assert!(
            !crashed.status.success(),
            "{point}: the process should have aborted"
        );
        let summary = json_stdout(&sync(&landing, &lake, None));
        let want = match point {
            "before-history-commit" => "applied",
            _ => "up-to-date",
        };
        assert_eq!(summary["tables"][0]["status"], want, "{point}: {summary}");
        for role in ["current", "history"] {
            let mut local =
                crate::common::table_rows(&local_lake.join("sales/orders").join(role)).await;
            local.sort();
            let url = format!("{lake}/sales/orders/{role}/");
            assert_eq!(rows(&url, endpoint).await, local, "{point}: {role}");
        }
        let again = json_stdout(&sync(&landing, &lake, None));
        assert_eq!(
            again["tables"][0]["status"], "up-to-date",
            "{point}: {again}"
        );
    }
}
