//! Shard plans through the `etl` command against the real Postgres: `etl plan --shards`, the
//! shards run by hand in any order (one twice, one killed after staging and run again), then
//! `etl commit`; the lake read back by DuckDB and compared with one process's run of the
//! same table.

use std::path::Path;
use std::process::{Command, Output};

fn pg_url() -> String {
    std::env::var("ETL_TEST_PG")
        .unwrap_or_else(|_| panic!("ETL_TEST_PG is not set: run `eval \"$(bash scripts/services.sh env)\"`"))
}

fn psql(sql: &str) -> String {
    psql_at(&pg_url(), sql)
}

fn psql_at(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// DuckDB's answer to `sql`, one line per row, values joined by `|`.
fn duckdb(sql: &str) -> String {
    let python = std::env::var("ETL_TEST_PYTHON").expect(
        "ETL_TEST_PYTHON is not set: run `eval \"$(bash scripts/services.sh env)\"` (DuckDB lives in its venv)",
    );
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, duckdb\nfor r in duckdb.sql(sys.argv[1]).fetchall(): print('|'.join(map(str, r)))",
            sql,
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn etl(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the etl binary runs")
}

fn ok(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A source table of `rows` orders in a schema of its own, and a folder with a configuration
/// loading it into the lake `lake` (INCREMENTAL on `updated_at`).
fn project(tag: &str, rows: u32) -> (tempfile::TempDir, String) {
    let schema = format!("etl_shards_{tag}_{}", std::process::id());
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (order_id bigint PRIMARY KEY, customer text, amount numeric(10,2),
           updated_at timestamp NOT NULL);
         INSERT INTO {schema}.orders SELECT i, 'c' || (i % 97), i * 1.25,
           timestamp '2025-07-01' + i * interval '1 second' FROM generate_series(1, {rows}) i;"
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("etl.toml"), config(&schema, "lake")).unwrap();
    std::fs::write(dir.path().join("single.toml"), config(&schema, "single")).unwrap();
    (dir, schema)
}

fn config(schema: &str, lake: &str) -> String {
    format!(
        r#"name = "sharded"
source = {{ kind = "postgres", url = "${{env:ETL_TEST_PG}}" }}
sink = {{ kind = "lake", location = "{lake}" }}

[[tables]]
name = "orders"
from = "{schema}.orders"
mode = "INCREMENTAL"
primary_key = "order_id"
cursor = "updated_at"
processed_at = false
"#
    )
}

/// Plans the next run of `orders` as `shards` shards; the plan's folder.
fn plan(dir: &Path, shards: usize) -> String {
    let out = ok(&etl(
        &[
            "plan",
            "etl.toml",
            "--table",
            "orders",
            "--shards",
            &shards.to_string(),
            "--plans",
            "plans",
        ],
        dir,
        &[],
    ));
    assert_eq!(out["shards"], shards, "{out}");
    out["plan"].as_str().unwrap().to_string()
}

fn shard(dir: &Path, plan: &str, index: usize) -> serde_json::Value {
    ok(&etl(
        &["shard", "etl.toml", "--plan", plan, "--index", &index.to_string()],
        dir,
        &[],
    ))
}

/// Every row of the lake `lake` under `dir`, as DuckDB reads it, in key order.
fn lake_rows(dir: &Path, lake: &str) -> String {
    duckdb(&format!(
        "SELECT order_id, customer, amount, updated_at FROM read_parquet('{}/{lake}/orders/**/*.parquet') ORDER BY 1",
        dir.display()
    ))
}

fn watermark(dir: &Path) -> serde_json::Value {
    ok(&etl(&["watermark", "show", "etl.toml", "orders"], dir, &[]))["watermark"].clone()
}

/// The acceptance case: shards run in any order, one twice, then one commit; the lake holds
/// each row once, as one process's run would, and the watermark moved once per commit.
#[test]
fn a_plan_run_by_hand_gives_the_target_of_one_run() {
    let (dir, schema) = project("hand", 20_000);
    let d = dir.path();
    let plan1 = plan(d, 4);
    // Nothing is visible before the commit, and no watermark moved.
    for i in [2, 0, 3] {
        let s = shard(d, &plan1, i);
        assert_eq!(s["recorded"], true, "{s}");
    }
    assert!(watermark(d).is_null());
    assert!(!d.join("lake/orders").exists(), "staged shards are invisible");
    // A commit with a shard missing names it and commits nothing.
    let out = etl(&["commit", "etl.toml", "--plan", &plan1], d, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shard(s) 1 have not staged"), "{err}");
    assert!(watermark(d).is_null());
    // Shard 1, twice: the second run stages nothing.
    let first = shard(d, &plan1, 1);
    let again = shard(d, &plan1, 1);
    assert_eq!(
        (first["recorded"].as_bool(), again["recorded"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(first["manifest"], again["manifest"]);
    let staged: u64 = (0..4)
        .map(|i| shard(d, &plan1, i)["manifest"]["written"].as_u64().unwrap())
        .sum();
    assert_eq!(staged, 20_000);
    let r = ok(&etl(&["commit", "etl.toml", "--plan", &plan1], d, &[]));
    let t = &r["tables"][0];
    assert_eq!(
        (
            t["status"].as_str(),
            t["written_count"].as_u64(),
            t["target_count"].as_u64()
        ),
        (Some("committed"), Some(20_000), Some(20_000)),
        "{r}"
    );
    let wm = watermark(d);
    assert_eq!(
        (wm["generation"].as_u64(), wm["run_id"].as_str()),
        (Some(1), r["run_id"].as_str())
    );
    assert_eq!(wm["position"]["cursor"]["value"], "2025-07-01T05:33:20");
    // Committing again changes nothing.
    let again = ok(&etl(&["commit", "etl.toml", "--plan", &plan1], d, &[]));
    assert_eq!(again["tables"][0]["recovered"], true, "{again}");
    assert_eq!(watermark(d)["generation"], 1);

    // Rows change and arrive; the next run, planned again, appends only them.
    psql(&format!(
        "UPDATE {schema}.orders SET amount = -1, updated_at = timestamp '2026-01-01' + order_id * interval '1 ms'
           WHERE order_id % 1000 = 0;
         INSERT INTO {schema}.orders SELECT i, 'new', 2.5, timestamp '2026-02-01' + i * interval '1 ms'
           FROM generate_series(20001, 20050) i;"
    ));
    let plan2 = plan(d, 3);
    for i in [1, 2, 0] {
        shard(d, &plan2, i);
    }
    let r = ok(&etl(&["commit", "etl.toml", "--plan", &plan2], d, &[]));
    assert_eq!(r["tables"][0]["written_count"], 70, "{r}");
    assert_eq!(watermark(d)["generation"], 2);

    // One process, the same two runs' worth of the table in one run, into another lake: the
    // latest version of every row is the same.
    ok(&etl(&["run", "single.toml"], d, &[]));
    let latest = |lake: &str| {
        duckdb(&format!(
            "SELECT count(*), count(DISTINCT order_id), sum(amount) FROM (SELECT * FROM read_parquet('{}/{lake}/orders/**/*.parquet')
               QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY updated_at DESC) = 1)",
            d.display()
        ))
    };
    let source = psql(&format!(
        "SELECT count(*) || '|' || count(DISTINCT order_id) || '|' || sum(amount) FROM {schema}.orders"
    ));
    assert_eq!(latest("lake"), source);
    assert_eq!(latest("single"), source);
    // The sharded lake holds the first run's 20 000 rows and the 70 changed or new ones.
    let counts = duckdb(&format!(
        "SELECT count(*), count(DISTINCT order_id) FROM read_parquet('{}/lake/orders/**/*.parquet')",
        d.display()
    ));
    assert_eq!(counts, "20070|20050");
    assert!(lake_rows(d, "lake").contains("20050|new|2.50|2026-02-01 00:00:20.050000"));
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A worker killed after staging and before recording leaves no manifest; its rerun records
/// one, and the commit holds each row once (the dead attempt's files are not committed, and
/// are deleted after the commit).
#[test]
fn a_shard_killed_after_staging_is_run_again_without_duplicates() {
    let (dir, schema) = project("kill", 5_000);
    let d = dir.path();
    let plan = plan(d, 2);
    let killed = etl(
        &["shard", "etl.toml", "--plan", &plan, "--index", "0"],
        d,
        &[("ETL_FAILPOINT", "after_stage")],
    );
    assert!(
        !killed.status.success(),
        "the failpoint aborts the worker (the failpoints feature)"
    );
    let staged_files = || {
        walk(&d.join("lake/_etl/staging"))
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .count()
    };
    assert!(staged_files() > 0, "the dead attempt staged files");
    assert_eq!(shard(d, &plan, 0)["recorded"], true);
    shard(d, &plan, 1);
    let r = ok(&etl(&["commit", "etl.toml", "--plan", &plan], d, &[]));
    assert_eq!(r["tables"][0]["written_count"], 5_000, "{r}");
    assert_eq!(
        duckdb(&format!(
            "SELECT count(*), count(DISTINCT order_id) FROM read_parquet('{}/lake/orders/**/*.parquet')",
            d.display()
        )),
        "5000|5000"
    );
    assert_eq!(staged_files(), 0, "nothing staged is left after the commit");
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A run that commits between the plan and its commit makes the plan stale: its shards and
/// its commit are refused, and the target holds the one run's rows.
#[test]
fn a_plan_overtaken_by_a_run_commits_nothing() {
    let (dir, schema) = project("stale", 1_000);
    let d = dir.path();
    let plan = plan(d, 2);
    shard(d, &plan, 0);
    ok(&etl(&["run", "etl.toml"], d, &[]));
    let late = etl(&["shard", "etl.toml", "--plan", &plan, "--index", "1"], d, &[]);
    assert_eq!(late.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("another run committed first"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    let out = etl(&["commit", "etl.toml", "--plan", &plan], d, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(watermark(d)["generation"], 1);
    assert_eq!(
        duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{}/lake/orders/**/*.parquet')",
            d.display()
        )),
        "1000"
    );
    // Bad input: a shard the plan lacks, a plan of no table.
    let out = etl(&["shard", "etl.toml", "--plan", &plan, "--index", "9"], d, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no shard 9"));
    let out = etl(&["plan", "etl.toml", "--shards", "0", "--plans", "plans"], d, &[]);
    assert_eq!(out.status.code(), Some(2), "a plan of no shard");
    let out = etl(&["shard", "etl.toml", "--plan", &plan], d, &[]);
    assert_eq!(out.status.code(), Some(2), "no index and no engine's");
    let out = etl(
        &["shard", "etl.toml", "--plan", &plan],
        d,
        &[("JOB_COMPLETION_INDEX", "1")],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the index from the engine: this shard is stale"
    );
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// [`project`] with a second table, `notes`, of no key (30 rows, FULL).
fn pipeline_project(tag: &str, rows: u32) -> (tempfile::TempDir, String) {
    let (dir, schema) = project(tag, rows);
    psql(&format!(
        "CREATE TABLE {schema}.notes (label text, n int);
         INSERT INTO {schema}.notes SELECT 'note ' || i, i FROM generate_series(1, 30) i;"
    ));
    let toml = std::fs::read_to_string(dir.path().join("etl.toml")).unwrap()
        + &format!(
            r#"
[[tables]]
name = "notes"
from = "{schema}.notes"
mode = "FULL"
processed_at = false
"#
        );
    std::fs::write(dir.path().join("etl.toml"), toml).unwrap();
    (dir, schema)
}

/// A table of a pipeline plan overtaken by a run of it fails its commit, reported as a run
/// reports a failed table (exit 1); the other table commits; committing again commits nothing
/// more.
#[test]
fn a_pipeline_plan_commits_each_table_on_its_own() {
    let (dir, schema) = pipeline_project("pipe_fail", 500);
    let d = dir.path();
    let out = ok(&etl(&["plan", "etl.toml", "--shards", "2", "--plans", "plans"], d, &[]));
    let plan = out["plan"].as_str().unwrap().to_string();
    for i in 0..3 {
        shard(d, &plan, i);
    }
    ok(&etl(&["run", "etl.toml", "--table", "notes"], d, &[]));
    let commit = |code: i32| {
        let out = etl(&["commit", "etl.toml", "--plan", &plan], d, &[]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(code), "{text}");
        let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let t = |i: usize| (r["tables"][i]["table"].clone(), r["tables"][i]["status"].clone());
        (t(0), t(1), r["tables"][1]["error"].as_str().unwrap_or("").to_string())
    };
    let (orders, notes, err) = commit(1);
    assert_eq!(
        (orders, notes),
        (("orders".into(), "committed".into()), ("notes".into(), "failed".into()))
    );
    assert!(err.contains("another run committed first"), "{err}");
    assert_eq!(watermark(d)["generation"], 1);
    assert_eq!(lake_rows(d, "lake").lines().count(), 500);
    let (orders, notes, _) = commit(1);
    assert_eq!((orders.1, notes.1), ("committed".into(), "failed".into()));
    assert_eq!(lake_rows(d, "lake").lines().count(), 500, "the plan's rows once");
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A plan of the whole pipeline: every table's shards numbered together, so one engine job
/// runs them all; a table without an integer key is one shard reading it whole. The commit
/// waits for every table's shards, then commits each table once; both tables read back by
/// DuckDB equal the source, and each table's watermark moved once.
#[test]
fn a_pipeline_plan_runs_every_table_as_one_job() {
    let (dir, schema) = pipeline_project("pipe", 3_000);
    let d = dir.path();
    let out = ok(&etl(&["plan", "etl.toml", "--shards", "3", "--plans", "plans"], d, &[]));
    assert_eq!(out["shards"], 4, "{out}");
    let tables = &out["tables"];
    assert_eq!(
        (
            &tables[0]["table"],
            &tables[0]["shards"],
            &tables[1]["table"],
            &tables[1]["first_index"]
        ),
        (&"orders".into(), &3.into(), &"notes".into(), &3.into()),
        "{out}"
    );
    assert!(
        tables[1]["unsplit"].as_str().unwrap().contains("and it has none"),
        "{out}"
    );
    let plan = out["plan"].as_str().unwrap().to_string();
    // Planned alone, the table of no key is refused, by name.
    let alone = etl(
        &[
            "plan", "etl.toml", "--table", "notes", "--shards", "2", "--plans", "plans",
        ],
        d,
        &[],
    );
    assert_eq!(alone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&alone.stderr).contains("table `notes`: a shard plan splits"));
    for i in [3, 1, 0] {
        assert_eq!(shard(d, &plan, i)["recorded"], true);
    }
    let out = etl(&["commit", "etl.toml", "--plan", &plan], d, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`orders`") && err.contains("shard(s) 2 have not staged"),
        "{err}"
    );
    assert!(
        !d.join("lake/notes").exists(),
        "no table commits while a shard is missing"
    );
    // The engine's index, twice: one manifest.
    let by_engine = |expect: bool| {
        let s = ok(&etl(
            &["shard", "etl.toml", "--plan", &plan],
            d,
            &[("JOB_COMPLETION_INDEX", "2")],
        ));
        assert_eq!(s["recorded"], expect, "{s}");
    };
    by_engine(true);
    by_engine(false);
    let out = etl(&["shard", "etl.toml", "--plan", &plan, "--index", "4"], d, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 4 shard(s): there is no shard 4"));

    let r = ok(&etl(&["commit", "etl.toml", "--plan", &plan], d, &[]));
    let got: Vec<_> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
                t["written_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("orders", "committed", 3_000), ("notes", "committed", 30)], "{r}");
    let read = |table: &str, cols: &str| {
        duckdb(&format!(
            "SELECT {cols} FROM read_parquet('{}/lake/{table}/**/*.parquet') ORDER BY ALL",
            d.display()
        ))
    };
    assert_eq!(
        read("notes", "n, label"),
        psql(&format!("SELECT n, label FROM {schema}.notes ORDER BY n"))
    );
    assert_eq!(
        read("orders", "count(*), count(DISTINCT order_id), sum(amount)"),
        psql(&format!(
            "SELECT count(*) || '|' || count(DISTINCT order_id) || '|' || sum(amount) FROM {schema}.orders"
        ))
    );
    assert_eq!(watermark(d)["generation"], 1);
    // Committing again changes nothing.
    let again = ok(&etl(&["commit", "etl.toml", "--plan", &plan], d, &[]));
    assert!(
        again["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["recovered"] == true),
        "{again}"
    );
    assert_eq!(read("notes", "count(*)"), "30");
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A transaction in progress that the source's role may not see the start of (another role's,
/// without `pg_read_all_stats`) holds a plan at the stored watermark, as it holds a run; one
/// that begins after the plan does not stop its shards, which read the plan's window whole.
/// In a database of its own, so that no other test's transaction is in it.
#[test]
fn a_hidden_transaction_holds_the_plan_not_its_shards() {
    let tag = format!("etl_hidden_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {tag} WITH (FORCE)"));
    psql(&format!("DROP ROLE IF EXISTS {tag}"));
    psql(&format!("CREATE DATABASE {tag}"));
    psql(&format!("CREATE ROLE {tag} LOGIN"));
    let admin = format!("{} dbname={tag}", pg_url());
    psql_at(
        &admin,
        &format!(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text, amount numeric(10,2),
               updated_at timestamp NOT NULL);
             INSERT INTO orders SELECT i, 'c' || i, i * 1.25, timestamp '2025-07-01' + i * interval '1 second'
               FROM generate_series(1, 1000) i;
             GRANT SELECT ON orders TO {tag};"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = format!("{} dbname={tag} user={tag}", pg_url());
    std::fs::write(
        d.join("etl.toml"),
        config("public", "lake").replace("${env:ETL_TEST_PG}", &source),
    )
    .unwrap();
    // Another role's transaction, open until it is terminated.
    let hold = || {
        let holder = Command::new("psql")
            .args([
                &format!("{admin} application_name={tag}_holder"),
                "-qAtc",
                "BEGIN; SELECT txid_current(); SELECT pg_sleep(120); COMMIT;",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let open = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{tag}_holder' AND backend_xid IS NOT NULL"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while psql_at(&admin, &open) != "1" {
            assert!(
                std::time::Instant::now() < deadline,
                "the holding transaction did not begin"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        holder
    };
    let release = |mut holder: std::process::Child| {
        psql_at(
            &admin,
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{tag}_holder'"),
        );
        let _ = holder.wait();
    };
    let holder = hold();
    let held = ok(&etl(
        &[
            "plan", "etl.toml", "--table", "orders", "--shards", "2", "--plans", "plans",
        ],
        d,
        &[],
    ));
    release(holder);
    assert_eq!(held["shards"], 0, "{held}");
    let doc = std::fs::read_to_string(d.join("plans").join(held["id"].as_str().unwrap()).join("plan.json")).unwrap();
    assert!(doc.contains("pg_read_all_stats"), "the plan says why it holds: {doc}");

    let plan = plan(d, 2);
    let holder = hold();
    for i in 0..2 {
        assert_eq!(shard(d, &plan, i)["recorded"], true);
    }
    release(holder);
    let r = ok(&etl(&["commit", "etl.toml", "--plan", &plan], d, &[]));
    assert_eq!(r["tables"][0]["written_count"], 1_000, "{r}");
    assert_eq!(
        duckdb(&format!(
            "SELECT count(*), count(DISTINCT order_id) FROM read_parquet('{}/lake/orders/**/*.parquet')",
            d.display()
        )),
        "1000|1000"
    );
    psql(&format!("DROP DATABASE {tag} WITH (FORCE)"));
    psql(&format!("DROP ROLE {tag}"));
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
