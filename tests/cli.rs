//! The `etl` command, through its binary: exit codes, JSON lines off a terminal, watermarks.

use std::path::Path;
use std::process::{Command, Output};

fn etl(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the etl binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A landing folder with two CSV tables and a configuration loading them into a lake.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("landing/orders")).unwrap();
    std::fs::create_dir_all(d.join("landing/customers")).unwrap();
    std::fs::write(
        d.join("landing/orders/day1.csv"),
        "order_id,amount,updated_at\n1,9.5,2025-07-01 10:00:00\n2,20,2025-07-02 10:00:00\n",
    )
    .unwrap();
    std::fs::write(d.join("landing/customers/all.csv"), "customer_id,name\n1,ann\n").unwrap();
    std::fs::write(
        d.join("etl.toml"),
        r#"name = "shop"
source = { kind = "files", location = "landing" }
sink = { kind = "lake", location = "lake" }

[[tables]]
name = "orders"
files = { prefix = "orders/", format = "csv" }
mode = "INCREMENTAL"
cursor = "updated_at"

[[tables]]
name = "customers"
files = { prefix = "customers/", format = "csv" }
"#,
    )
    .unwrap();
    dir
}

#[test]
fn run_prints_one_json_line_and_exits_by_outcome() {
    let dir = project();
    let d = dir.path();
    let out = etl(&["run", "etl.toml"], d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&out);
    assert_eq!(r["pipeline"], "shop");
    let tables = r["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0]["written_count"], 2);
    assert!(d.join("lake/orders").is_dir());

    // Again: nothing new. Only one table, with its mode overridden for this run.
    let out = etl(&["run", "etl.toml", "--table", "orders"], d);
    let r = json(&out);
    assert_eq!(r["tables"].as_array().unwrap().len(), 1);
    assert_eq!(r["tables"][0]["status"], "no_new_data");
    let out = etl(
        &["run", "etl.toml", "--table", "orders", "--OBJ", r#"{"orders":"FULL"}"#],
        d,
    );
    let r = json(&out);
    assert_eq!(
        (
            r["tables"][0]["mode"].as_str(),
            r["tables"][0]["written_count"].as_u64()
        ),
        (Some("FULL"), Some(2))
    );

    // Glue's --load_type: every table FULL this run.
    let r = json(&etl(&["run", "etl.toml", "--load_type", "full"], d));
    let modes: Vec<&str> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["FULL", "FULL"]);
    assert_eq!(
        etl(&["run", "etl.toml", "--load_type", "sideways"], d).status.code(),
        Some(2)
    );

    // A table that fails: exit 1, the report says why.
    std::fs::write(
        d.join("landing/orders/day2.csv"),
        "order_id,amount,updated_at\n3,x,y,z\n",
    )
    .unwrap();
    let out = etl(&["run", "etl.toml"], d);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    assert_eq!(r["tables"][0]["status"], "failed");
    assert!(r["tables"][0]["error"].as_str().unwrap().contains("day2.csv"), "{r}");
}

#[test]
fn bad_arguments_and_configurations_exit_2_naming_the_problem() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("bad.toml"),
        "name = \"x\"\nsource = { kind = \"files\", location = 1 }\n",
    )
    .unwrap();
    let out = etl(&["run", "bad.toml"], d);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml, line 2, key source.location"), "{err}");
    assert!(out.stdout.is_empty());
    let out = etl(&["run", "etl.toml", "--table", "nope"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no table `nope`"));
    let out = etl(&["frobnicate"], d);
    assert_eq!(out.status.code(), Some(2));
    let out = etl(&["--help"], d);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "resync", "backfill", "watermark", "status", "Exit codes"] {
        assert!(help.contains(word), "--help names {word}: {help}");
    }
}

#[test]
fn an_unreachable_service_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pg.toml"),
        "name = \"x\"\nsource = { kind = \"postgres\", url = \"postgresql://nobody@127.0.0.1:1/none?connect_timeout=2\" }\n\
         sink = { kind = \"lake\", location = \"lake\" }\n[[tables]]\nname = \"t\"\n",
    )
    .unwrap();
    let out = etl(&["run", "pg.toml"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn watermarks_are_shown_set_and_reset() {
    let dir = project();
    let d = dir.path();
    let out = etl(&["watermark", "show", "etl.toml", "orders"], d);
    assert_eq!(json(&out)["watermark"], serde_json::Value::Null);
    assert_eq!(etl(&["run", "etl.toml"], d).status.code(), Some(0));
    let w = json(&etl(&["watermark", "show", "etl.toml", "orders"], d));
    assert_eq!(w["watermark"]["generation"], 1);
    assert_eq!(w["watermark"]["position"]["cursor"]["value"], "2025-07-02T10:00:00");

    let out = etl(&["watermark", "set", "etl.toml", "orders", "2025-07-01 12:00:00"], d);
    assert_eq!(out.status.code(), Some(0));
    let w = json(&etl(&["watermark", "show", "etl.toml", "orders"], d));
    assert_eq!(
        (
            w["watermark"]["generation"].as_u64(),
            &w["watermark"]["position"]["cursor"]["value"]
        ),
        (Some(2), &serde_json::json!("2025-07-01T12:00:00"))
    );
    let status = json(&etl(&["status", "etl.toml"], d));
    assert_eq!(status["tables"].as_array().unwrap().len(), 2);

    assert_eq!(
        etl(&["watermark", "reset", "etl.toml", "orders"], d).status.code(),
        Some(0)
    );
    let w = json(&etl(&["watermark", "show", "etl.toml", "orders"], d));
    assert_eq!(w["watermark"]["position"]["cursor"], serde_json::Value::Null);
    let out = etl(&["check", "etl.toml"], d);
    assert_eq!(json(&out)["tables"], serde_json::json!(["orders", "customers"]));
}

#[test]
fn crawl_and_catalog_ddl_describe_the_lake() {
    let dir = project();
    let d = dir.path();
    assert_eq!(etl(&["run", "etl.toml"], d).status.code(), Some(0));
    let out = etl(&["crawl", "etl.toml"], d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let c = json(&out);
    assert_eq!(c["tables"].as_array().unwrap().len(), 2, "{c}");
    let out = etl(&["catalog", "ddl", "etl.toml", "--location", "s3://bucket/lake"], d);
    let ddl = json(&out);
    let ddl: Vec<&str> = ddl["ddl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        ddl.iter()
            .any(|s| s.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `orders`")
                && s.contains("LOCATION 's3://bucket/lake/orders/'")),
        "{ddl:?}"
    );
}

/// A secret referenced by a configuration appears in no output at any log level, whether the
/// run fails to connect or runs.
#[test]
fn a_secret_is_never_printed_at_any_log_level() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("pg.toml"),
        "name = \"x\"\nsource = { kind = \"postgres\", url = \"${env:ETL_SECRET_URL}\" }\n\
         sink = { kind = \"lake\", location = \"lake\" }\n[[tables]]\nname = \"t\"\n",
    )
    .unwrap();
    let run = |config: &str, url: &str, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
        cmd.args(args)
            .arg("run")
            .arg(config)
            .current_dir(d)
            .env("ETL_SECRET_URL", url);
        cmd.env_remove("RUST_LOG");
        cmd.output().unwrap()
    };
    for args in [&["-vvv"][..], &[][..]] {
        let out = run(
            "pg.toml",
            "postgresql://etl:hunter2secret@127.0.0.1:1/x?connect_timeout=2",
            args,
        );
        assert_eq!(out.status.code(), Some(3));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter2secret"), "{all}");
    }
    // -vvv logs, to stderr only (stdout keeps its one JSON line).
    let out = run("etl.toml", "", &["-vvv"]);
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("INFO") && logs.contains("table done"), "{logs}");
    json(&out);
    let quiet = run("etl.toml", "", &[]);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("INFO"),
        "warnings only by default"
    );
    // A run that connects, at trace level: the password of the real service is not printed.
    if let Ok(pg) = std::env::var("ETL_TEST_PG") {
        let url = format!("{pg} password=hunter2secret");
        let out = run("pg.toml", &url, &["-vvv"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter2secret"), "{all}");
    }
}

/// On a terminal (a pseudo-terminal from `script`), a run shows progress lines per table and a
/// summary; through a pipe, neither: one JSON line.
#[test]
fn progress_shows_on_a_terminal_only() {
    let dir = project();
    let d = dir.path();
    let bin = env!("CARGO_BIN_EXE_etl");
    let out = Command::new("script")
        .args(["-qec", &format!("{bin} run etl.toml"), "/dev/null"])
        .current_dir(d)
        .output()
        .expect("util-linux script gives a pseudo-terminal");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("rows/s") && shown.contains("done") && shown.contains("orders"),
        "progress lines: {shown}"
    );
    assert!(
        shown.contains("succeeded") && !shown.contains("{\"pipeline\""),
        "a summary, no JSON: {shown}"
    );
    std::fs::write(
        d.join("landing/orders/day2.csv"),
        "order_id,amount,updated_at\n3,1.5,2025-07-03 10:00:00\n",
    )
    .unwrap();
    let piped = etl(&["run", "etl.toml"], d);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("rows/s"));
    let r = json(&piped);
    assert_eq!(r["tables"][0]["written_count"], 1, "{r}");
}

/// `etl plan` says what the next run would read, and writes nothing.
#[test]
fn plan_says_what_a_run_would_read_and_writes_nothing() {
    let dir = project();
    let d = dir.path();
    let p = json(&etl(&["plan", "etl.toml"], d));
    let t = &p["tables"][0];
    assert_eq!(
        (t["table"].as_str(), t["mode"].as_str()),
        (Some("orders"), Some("INCREMENTAL"))
    );
    assert_eq!(
        (t["watermark"]["generation"].as_u64(), t["estimate"]["files"].as_u64()),
        (Some(0), Some(1))
    );
    let written = |d: &Path| walk(&d.join("lake"));
    assert_eq!(written(d), 0, "plan writes no file");
    assert_eq!(etl(&["run", "etl.toml"], d).status.code(), Some(0));
    let p = json(&etl(&["plan", "etl.toml", "--table", "orders"], d));
    assert_eq!(p["tables"].as_array().unwrap().len(), 1);
    assert_eq!(p["tables"][0]["estimate"]["files"], 0, "nothing new: {p}");
    let p = json(&etl(&["plan", "etl.toml", "--load_type", "full"], d));
    assert_eq!(
        (
            p["tables"][0]["mode"].as_str(),
            p["tables"][0]["estimate"]["files"].as_u64()
        ),
        (Some("FULL"), Some(1))
    );
}

/// Files under `dir`, recursively.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
            .sum()
    })
}
