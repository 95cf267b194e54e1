//! The contents of a `~/.forward` or `:include:` file: read with a cap on
//! its size, then decoded line by line (a line that is not UTF-8 is
//! skipped, never decoded lossily) and parsed as a list of targets.

use std::fs::File;
use std::io::Read;

use nix::errno::Errno;
use nix::sys::stat::FileStat;

use super::safety::{Refusal, refusal};
use crate::aliases::Target;

/// Reads all of `file` (of `fstat` `meta`), refusing it if it holds more
/// than `cap` bytes, before or while it is read: a file cut short could
/// end in half a target.
pub(super) fn read_capped(
    file: File,
    meta: &FileStat,
    cap: u64,
    shown: &str,
) -> Result<Vec<u8>, Refusal> {
    let too_big = || Refusal::Unsafe(format!("{shown}: is larger than {cap} bytes"));
    if u64::try_from(meta.st_size).unwrap_or(u64::MAX) > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| match e.raw_os_error() {
            Some(errno) => refusal(shown, "cannot read it", Errno::from_raw(errno)),
            None => Refusal::Failed(format!("{shown}: cannot read it: {e}")),
        })?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The targets of a file's bytes and the warnings of what was skipped
/// (`SOURCE:LINE: why`). A line that is not UTF-8 is skipped with a
/// warning, or silently if its first non-blank byte is `#` (a comment in
/// Latin-1 is still a comment); line numbers stay those of the file.
pub(super) fn targets(bytes: &[u8], source: &str) -> (Vec<Target>, Vec<String>) {
    let mut text = String::with_capacity(bytes.len());
    let mut warnings = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            text.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(line) => text.push_str(line),
            Err(_) if line.trim_ascii_start().starts_with(b"#") => {}
            Err(_) => warnings.push(format!("{source}:{}: not valid UTF-8; line skipped", i + 1)),
        }
    }
    let (targets, mut parsed) = Target::parse_targets(&text, source);
    warnings.append(&mut parsed);
    warnings.sort_by_key(|w| line_of(w, source));
    (targets, warnings)
}

/// The line number a warning `SOURCE:LINE: ...` names, to keep warnings
/// in the order of the file.
fn line_of(warning: &str, source: &str) -> usize {
    warning
        .get(source.len() + 1..)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
