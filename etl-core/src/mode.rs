//! The five load modes and the runtime override map.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// What a run reads, and what it does to the target.
///
/// | mode | reads | target |
/// | --- | --- | --- |
/// | `FULL` | whole source | replaced: readers see the old table or the new one |
/// | `TRUNCATE_INSERT` | whole source | definition kept, emptied and refilled |
/// | `INCREMENTAL` | rows past the watermark | appended |
/// | `UPSERT` | rows past the watermark | merged by primary key |
/// | `APPEND` | whole source | blind insert |
///
/// Parsed case-insensitively; `-`, `_` and spaces are interchangeable:
///
/// ```
/// use etl_core::LoadMode;
/// assert_eq!("upsert".parse::<LoadMode>().unwrap(), LoadMode::Upsert);
/// assert_eq!("Truncate-Insert".parse::<LoadMode>().unwrap(), LoadMode::TruncateInsert);
/// assert_eq!(LoadMode::Incremental.to_string(), "INCREMENTAL");
/// assert!("merge".parse::<LoadMode>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoadMode {
    /// Read everything, replace the target atomically.
    Full,
    /// Read everything, empty and refill the target keeping its definition.
    TruncateInsert,
    /// Read past the watermark, append to the target.
    Incremental,
    /// Read past the watermark, merge into the target by primary key.
    Upsert,
    /// Read everything, insert blindly.
    Append,
}

impl LoadMode {
    /// All five modes.
    pub const ALL: [LoadMode; 5] = [
        LoadMode::Full,
        LoadMode::TruncateInsert,
        LoadMode::Incremental,
        LoadMode::Upsert,
        LoadMode::Append,
    ];

    /// The canonical upper-case name (`"TRUNCATE_INSERT"`).
    pub fn as_str(self) -> &'static str {
        match self {
            LoadMode::Full => "FULL",
            LoadMode::TruncateInsert => "TRUNCATE_INSERT",
            LoadMode::Incremental => "INCREMENTAL",
            LoadMode::Upsert => "UPSERT",
            LoadMode::Append => "APPEND",
        }
    }

    /// Whether the mode reads only rows past the stored watermark.
    pub fn reads_incrementally(self) -> bool {
        matches!(self, LoadMode::Incremental | LoadMode::Upsert)
    }

    /// Whether the mode replaces the whole target content.
    pub fn replaces_target(self) -> bool {
        matches!(self, LoadMode::Full | LoadMode::TruncateInsert)
    }
}

impl fmt::Display for LoadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        LoadMode::ALL.into_iter().find(|m| m.as_str() == norm).ok_or_else(|| {
            Error::config(format!(
                "unknown load mode `{s}`; expected one of FULL, TRUNCATE_INSERT, INCREMENTAL, UPSERT, APPEND"
            ))
        })
    }
}

impl Serialize for LoadMode {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LoadMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| match e {
            crate::Error::Config { message } => serde::de::Error::custom(message),
            other => serde::de::Error::custom(other),
        })
    }
}

/// A runtime map of table → mode that changes some tables' modes for one run, as Glue jobs'
/// `--OBJ '{"ns.table":"INCREMENTAL"}'` argument does.
///
/// ```
/// use etl_core::{LoadMode, ModeOverrides};
/// let o = ModeOverrides::from_json(r#"{"public.orders":"full"}"#).unwrap();
/// assert_eq!(o.get("public.orders"), Some(LoadMode::Full));
/// assert!(ModeOverrides::from_json(r#"{"t":"sideways"}"#).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModeOverrides(BTreeMap<String, LoadMode>);

impl ModeOverrides {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JSON object of table names to mode strings.
    ///
    /// # Errors
    /// [`Error::Config`] when the text is not such an object or a mode is unknown.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::config(format!("mode overrides must be a JSON object of table to mode: {e}")))
    }

    /// Sets one table's mode.
    pub fn with(mut self, table: impl Into<String>, mode: LoadMode) -> Self {
        self.0.insert(table.into(), mode);
        self
    }

    /// The override for a table, if any.
    pub fn get(&self, table: &str) -> Option<LoadMode> {
        self.0.get(table).copied()
    }

    /// The tables named in the map.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_round_trips_serde() {
        for m in LoadMode::ALL {
            assert_eq!(m.as_str().parse::<LoadMode>().unwrap(), m);
            assert_eq!(m.as_str().to_lowercase().parse::<LoadMode>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<LoadMode>(&json).unwrap(), m);
        }
        assert_eq!(
            " truncate insert ".parse::<LoadMode>().unwrap(),
            LoadMode::TruncateInsert
        );
        assert_eq!(
            serde_json::from_str::<LoadMode>("\"upsert\"").unwrap(),
            LoadMode::Upsert
        );
        let err = "merge".parse::<LoadMode>().unwrap_err().to_string();
        assert!(err.contains("merge") && err.contains("UPSERT"), "{err}");
    }
}
