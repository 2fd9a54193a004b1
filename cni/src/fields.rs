//! Typed reads of JSON config fields that name the field when its type or value is wrong
//! (code 7). Missing and `null` both mean "not set".

use serde_json::{Map, Value};

use crate::skel::error::{Error, Result};

/// One JSON object of the config, and where it sits (`""` or `"ipam."`), for messages.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    pub map: &'a Map<String, Value>,
    pub path: &'a str,
}

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidConfig(msg.into())
}

impl<'a> Section<'a> {
    pub fn new(map: &'a Map<String, Value>, path: &'a str) -> Section<'a> {
        Section { map, path }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Logs keys this section does not know (they are ignored, not errors).
    pub fn note_unknown(&self, known: &[&str]) {
        for key in self.map.keys().filter(|k| !known.contains(&k.as_str())) {
            tracing::debug!("ignoring unknown field {}{key}", self.path);
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                Err(invalid(format!("{}{key} must not be empty", self.path)))
            }
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{}{key} must be a string", self.path))),
        }
    }

    pub fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("{}{key} must be true or false", self.path))),
        }
    }

    pub fn millis(&self, key: &str, default: u64) -> Result<std::time::Duration> {
        match self.get(key) {
            None => Ok(std::time::Duration::from_millis(default)),
            Some(v) => {
                v.as_u64().filter(|n| *n <= 3_600_000).map(std::time::Duration::from_millis).ok_or_else(
                    || {
                        invalid(format!(
                            "{}{key} must be a whole number of milliseconds up to 3600000",
                            self.path
                        ))
                    },
                )
            }
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let bad = || invalid(format!("{}{key} must be an array of strings", self.path));
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(|i| i.as_str().map(str::to_string).ok_or_else(bad)).collect()
            }
            Some(_) => Err(bad()),
        }
    }

    pub fn array(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(invalid(format!("{}{key} must be an array", self.path))),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(invalid(format!("{}{key} must be an object", self.path))),
        }
    }

    /// A string parsed with `FromStr`, the error naming the field and the expected form.
    pub fn parsed<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => {
                s.parse().map(Some).map_err(|_| invalid(format!("{}{key} {s:?} is not {what}", self.path)))
            }
        }
    }
}
