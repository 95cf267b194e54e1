//! Test fixtures shared by the configuration's tests: a configuration file
//! in a temporary directory, loaded with a command line.

use std::ffi::OsString;

use super::{Loaded, load};

/// A file in a temporary directory, and `config::load` of `args` with
/// `-C FILE` in front.
pub(crate) struct Conf {
    dir: tempfile::TempDir,
}

impl Conf {
    pub(crate) fn new(text: &[u8]) -> Conf {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postie.conf"), text).unwrap();
        Conf { dir }
    }

    pub(crate) fn path(&self) -> String {
        self.dir.path().join("postie.conf").display().to_string()
    }

    pub(crate) fn load(&self, args: &[&str]) -> Result<Loaded, String> {
        let path = self.path();
        let mut argv = vec!["postie", "-C", &path];
        argv.extend(args);
        let cl = crate::cli::command_line(argv.iter().map(OsString::from)).unwrap();
        load(cl).map_err(|e| e.0)
    }
}
