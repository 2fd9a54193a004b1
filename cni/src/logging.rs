//! Plugin logs: appended to a file (Azure's default path, overridable), one line per event.
//!
//! A runtime usually discards a plugin's stderr, so the file is the record that explains a
//! failed pod start. When the file cannot be opened the log goes to stderr instead.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing::Level;

use crate::skel::error::{Error, Result};

/// Parses `logLevel` (`error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(s: &str) -> Result<Level> {
    s.parse::<Level>().map_err(|_| {
        Error::InvalidConfig(format!("logLevel {s:?} must be one of error, warn, info, debug, trace"))
    })
}

/// Installs the process-wide logger. Safe to call more than once (later calls are ignored).
pub fn init(path: &Path, level: Level) {
    let builder = tracing_subscriber::fmt().with_max_level(level).with_ansi(false).with_target(false);
    let opened = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
    match opened {
        Ok(file) => {
            let _ = builder.with_writer(Mutex::new(file)).try_init();
        }
        Err(e) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            tracing::warn!("cannot open log file {}: {e}; logging to stderr", path.display());
        }
    }
}
