//! Test fixtures shared by the queue's tests and those of the modules
//! that read the queue (`postie check`).

use std::time::SystemTime;

use super::{Entry, Pending, Recipient};

/// An entry from `jon@frogbog` to the alias `staff` (jon and alice),
/// alice pending and not yet tried, received at `received`; no id yet.
pub(crate) fn entry(received: SystemTime) -> Entry {
    Entry {
        id: String::new(),
        log_id: "5A1B2C3.7".into(),
        received,
        size: 0,
        trace: 0,
        sender: Some("jon@frogbog".into()),
        submitter: None,
        envid: None,
        ret: None,
        warned: None,
        recipients: vec![Recipient {
            address: "staff".into(),
            notify: None,
            orcpt: None,
            users: vec!["jon".into(), "alice".into()],
        }],
        pending: vec![Pending {
            rcpt: 0,
            user: "alice".into(),
            attempts: 0,
            next_attempt: received,
            last_error: None,
        }],
    }
}
