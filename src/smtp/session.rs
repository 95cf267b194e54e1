//! The SMTP transaction state machine (RFC 5321 4.1.4, 4.3.2). Pure.
pub struct Session;
pub struct Envelope;
