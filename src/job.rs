//! Job arguments as AWS Glue passes them, for pipeline binaries of your own:
//! `--KEY value` or `--KEY=value`, read the way Glue's `getResolvedOptions` reads them, and
//! the two arguments Glue-style jobs use to choose modes: `--load_type full|incremental` for
//! every table and `--OBJ '{"table":"MODE"}'` for some.
//!
//! ```
//! use etl::job::Args;
//! use etl::{LoadMode, TableSpec};
//!
//! let args = Args::parse(["job", "--JOB_NAME", "orders", "--load_type=full",
//!                         "--OBJ", r#"{"customers":"UPSERT"}"#, "--TempDir", "s3://t/"]).unwrap();
//! let options = args.resolved(&["JOB_NAME", "load_type"]).unwrap();
//! assert_eq!(options["JOB_NAME"], "orders");
//! assert!(args.resolved(&["database_name"]).unwrap_err().to_string().contains("--database_name"));
//!
//! let tables = [TableSpec::new("orders"), TableSpec::new("customers")];
//! let overrides = args.mode_overrides(&tables).unwrap();
//! assert_eq!(overrides.get("orders"), Some(LoadMode::Full));        // --load_type full
//! assert_eq!(overrides.get("customers"), Some(LoadMode::Upsert));   // --OBJ wins for its tables
//! ```

use std::collections::BTreeMap;

use etl_core::{Error, LoadMode, ModeOverrides, Result, TableSpec};

/// A job's `--KEY value` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    values: BTreeMap<String, String>,
}

impl Args {
    /// The process's own arguments ([`Args::parse`] of `std::env::args()`).
    ///
    /// # Errors
    /// As [`Args::parse`].
    pub fn from_env() -> Result<Args> {
        Args::parse(std::env::args())
    }

    /// Reads `--KEY value` and `--KEY=value` pairs (the first argument, the program, and any
    /// word that is not an option's value are skipped, as Glue skips them); a later
    /// occurrence of a key wins. An option with no value (`--flag` at the end, or before
    /// another option) holds the empty string.
    ///
    /// # Errors
    /// None yet; a `Result` so that stricter rules need no new signature.
    pub fn parse<I, S>(args: I) -> Result<Args>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let words: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut values = BTreeMap::new();
        let mut i = 0;
        while i < words.len() {
            let Some(option) = words[i].strip_prefix("--").filter(|o| !o.is_empty()) else {
                i += 1;
                continue;
            };
            if let Some((k, v)) = option.split_once('=') {
                values.insert(k.to_string(), v.to_string());
                i += 1;
            } else {
                match words.get(i + 1).filter(|w| !w.starts_with("--")) {
                    Some(v) => {
                        values.insert(option.to_string(), v.clone());
                        i += 2;
                    }
                    None => {
                        values.insert(option.to_string(), String::new());
                        i += 1;
                    }
                }
            }
        }
        Ok(Args { values })
    }

    /// The value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The named options, each required (Glue's `getResolvedOptions`).
    ///
    /// # Errors
    /// [`Error::Config`] naming every option missing.
    pub fn resolved(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !self.values.contains_key(**n))
            .map(|n| format!("--{n}"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "the job needs the argument{} {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        Ok(names.iter().map(|n| (n.to_string(), self.values[*n].clone())).collect())
    }

    /// The modes of this run: `--load_type full` runs every table `FULL` (`incremental`:
    /// each in its own mode), and `--OBJ '{"table":"MODE"}'` sets the named tables' modes,
    /// over `--load_type`.
    ///
    /// # Errors
    /// [`Error::Config`] for a `--load_type` other than full or incremental, and as
    /// [`ModeOverrides::from_json`] for `--OBJ`.
    pub fn mode_overrides(&self, tables: &[TableSpec]) -> Result<ModeOverrides> {
        let mut overrides = ModeOverrides::new();
        match self.get("load_type").map(str::to_ascii_lowercase).as_deref() {
            None | Some("incremental") => {}
            Some("full") => {
                for t in tables {
                    overrides = overrides.with(&t.name, LoadMode::Full);
                }
            }
            Some(other) => {
                return Err(Error::config(format!(
                    "--load_type `{other}`: expected full or incremental"
                )));
            }
        }
        if let Some(json) = self.get("OBJ") {
            let obj = ModeOverrides::from_json(json)?;
            for t in obj.tables() {
                overrides = overrides.with(t, obj.get(t).expect("listed"));
            }
        }
        Ok(overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_as_glue_reads_them() {
        let a = Args::parse([
            "prog", "stray", "--a", "1", "--b=x=y", "--flag", "--c", "3", "--a", "2", "--last",
        ])
        .unwrap();
        assert_eq!(
            (a.get("a"), a.get("b"), a.get("flag"), a.get("c"), a.get("last")),
            (Some("2"), Some("x=y"), Some(""), Some("3"), Some(""))
        );
        assert_eq!(a.get("stray"), None);
        let e = a.resolved(&["a", "x", "y"]).unwrap_err().to_string();
        assert!(e.contains("the job needs the arguments --x, --y"), "{e}");
        let t = [TableSpec::new("t")];
        let bad = Args::parse(["--load_type", "sideways"]).unwrap();
        assert!(bad.mode_overrides(&t).is_err());
        let obj = Args::parse(["--OBJ", r#"{"nope":"FULL"}"#]).unwrap();
        assert_eq!(obj.mode_overrides(&t).unwrap().get("nope"), Some(LoadMode::Full));
        assert!(
            Args::parse(["--load_type", "incremental"])
                .unwrap()
                .mode_overrides(&t)
                .unwrap()
                .is_empty()
        );
    }
}
