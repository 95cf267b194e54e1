//! STARTTLS (RFC 3207): the server's certificate and key, the handshake
//! over a blocking stream, and the reload on SIGHUP.
//!
//! rustls over the blocking socket of the session's thread: the handshake
//! is driven by [`handshake`] with a deadline of its own, then the session
//! reads and writes the [`rustls::StreamOwned`] as it did the socket.
//! Only TLS 1.2 and 1.3 (rustls has nothing older), with the default
//! cipher suites and key exchanges of rustls's aws-lc-rs provider (forward
//! secrecy only; the hybrid post-quantum X25519MLKEM768 first).
//!
//! The key is read by a process that may read it: as root before the SMTP
//! side drops its privileges, and on SIGHUP by the delivery process, which
//! keeps root and hands the SMTP side the files' contents
//! ([`crate::privsep`]); the SMTP side's user need not (and should not) be
//! able to read the key file. A reload that fails (a file missing, a key
//! that does not match the certificate) keeps the configuration in use
//! and says why in the log.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Debian's self-signed pair from the `ssl-cert` package, which postie,
/// like Debian's Postfix, uses when no other is configured.
pub const SNAKEOIL_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
pub const SNAKEOIL_KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

/// The largest certificate chain or key file read: a chain of a few
/// certificates is some KiB (and the privilege separation's frame holds
/// both).
const MAX_PEM: u64 = 256 * 1024;

/// Where the certificate chain and the private key are, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The contents of the two files.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Pem({} + {} bytes)", self.cert.len(), self.key.len())
    }
}

impl TlsFiles {
    /// Debian's snakeoil pair, if both files are there.
    pub fn snakeoil() -> Option<TlsFiles> {
        let files = TlsFiles {
            cert: SNAKEOIL_CERT.into(),
            key: SNAKEOIL_KEY.into(),
        };
        (files.cert.exists() && files.key.exists()).then_some(files)
    }

    /// Reads both files (at most 256 KiB each).
    pub fn read(&self) -> io::Result<Pem> {
        Ok(Pem {
            cert: read_small(&self.cert)?,
            key: read_small(&self.key)?,
        })
    }
}

fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(named)?;
    let mut out = Vec::new();
    file.take(MAX_PEM + 1)
        .read_to_end(&mut out)
        .map_err(named)?;
    if out.len() as u64 > MAX_PEM {
        return Err(named(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 256 KiB",
        )));
    }
    Ok(out)
}

/// The server configuration for a certificate chain and its key: TLS 1.2
/// and 1.3, no client certificates.
pub fn server_config(pem: &Pem) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no CERTIFICATE in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// Where a reload gets the files' contents: read here, or asked of the
/// delivery process.
pub type Source = dyn Fn() -> io::Result<Pem> + Send + Sync;

/// What every session of a server shares: the configuration in use
/// (replaced by [`Tls::reload`]) and the handshake's time limit.
pub struct Tls {
    config: RwLock<Arc<ServerConfig>>,
    source: Mutex<Box<Source>>,
    /// The longest a handshake may take, from the `220` to STARTTLS.
    pub handshake_timeout: Duration,
}

impl Tls {
    /// TLS from `pem`, reloaded later from `source`.
    pub fn new(pem: &Pem, source: Box<Source>, handshake_timeout: Duration) -> Result<Tls, String> {
        Ok(Tls {
            config: RwLock::new(server_config(pem)?),
            source: Mutex::new(source),
            handshake_timeout,
        })
    }

    /// Reloads from `source` from now on (the delivery process, once the
    /// privileges are separated).
    pub fn set_source(&self, source: Box<Source>) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again and uses them for the handshakes that follow
    /// (sessions already in TLS keep theirs). On an error the
    /// configuration in use stays, and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let pem = {
            let source = self.source.lock().unwrap_or_else(|p| p.into_inner());
            source().map_err(|e| e.to_string())?
        };
        let config = server_config(&pem)?;
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

/// A session's stream after a handshake.
pub type TlsStream<S> = StreamOwned<ServerConnection, S>;

/// Runs the server side of a handshake on `sock` within `within`, and
/// returns the stream to go on with and what was agreed (for the log and
/// `Received:`). `set_timeout` sets the socket's read timeout. A client
/// that sends something other than a handshake, or nothing in time, gets
/// an error (and an alert where TLS has one).
pub fn handshake<S: Read + Write>(
    config: Arc<ServerConfig>,
    mut sock: S,
    within: Duration,
    set_timeout: impl Fn(&mut S, Duration) -> io::Result<()>,
) -> io::Result<(TlsStream<S>, String)> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let until = Instant::now() + within;
    while conn.is_handshaking() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        set_timeout(&mut sock, left)?;
        let (read, wrote) = conn.complete_io(&mut sock)?;
        if read == 0 && wrote == 0 && conn.is_handshaking() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    let agreed = describe(&conn);
    Ok((StreamOwned::new(conn, sock), agreed))
}

/// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`: what Postfix logs and
/// writes in `Received:`, in rustls's names.
fn describe(conn: &ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    match conn.negotiated_cipher_suite() {
        Some(s) => format!("{version} with cipher {:?}", s.suite()),
        None => version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed EC certificate made for these tests, its key, and a
    /// key of another pair.
    const CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBgDCCASWgAwIBAgIUXr71Rn4Tf6d3OOr9Ef7WPrfmVgIwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdW5pdC50ZXN0MCAXDTI2MTIwNTA5MDcyMVoYDzIxMjYxMTEx
MDkwNzIxWjAUMRIwEAYDVQQDDAl1bml0LnRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARc/k7hEZ6UMExxPdSbimMyjJaf/mflO0ndZQExkeo0tSE4crZf6no9
LHkA8Yl/rjSGcpzR259aktc9gyZ8xY5Yo1MwUTAdBgNVHQ4EFgQUPakvcuARQb03
L1d9FlM9wOLAdaowHwYDVR0jBBgwFoAUPakvcuARQb03L1d9FlM9wOLAdaowDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEA9hH8v8rLj5N72GLoo1IH
J5srCcoIcn9tN+qIXsntMwsCIQCR8lJsjpijbB+hqhNUeTE53VtnVrmqCO7KDhrx
VaYsug==
-----END CERTIFICATE-----
";
    const KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNz3lVJT5WBHNH35R
Bvt4tZipWl/GYvt/wFCAiAUCfbGhRANCAARc/k7hEZ6UMExxPdSbimMyjJaf/mfl
O0ndZQExkeo0tSE4crZf6no9LHkA8Yl/rjSGcpzR259aktc9gyZ8xY5Y
-----END PRIVATE KEY-----
";
    const OTHER_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgU2P3RffnppT+uzzn
xa5AQBEmO6v4iiquERu5QlYDOGahRANCAASAWCY3YtiIpzJ5Uj7Ti8Km4+IYo+05
KPresoohyDshkLMip+lWKPo4YD1hYrfYp0VU0PufLHPL19d0Tnk0gKPa
-----END PRIVATE KEY-----
";

    fn pem(cert: &str, key: &str) -> Pem {
        Pem {
            cert: cert.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_certificate_needs_its_own_key() {
        assert!(server_config(&pem(CERT, KEY)).is_ok());
        let why = server_config(&pem(CERT, OTHER_KEY)).unwrap_err();
        assert!(why.contains("certificate and key"), "{why}");
        let why = server_config(&pem("", KEY)).unwrap_err();
        assert!(why.contains("no CERTIFICATE"), "{why}");
        assert!(
            server_config(&pem(CERT, ""))
                .unwrap_err()
                .starts_with("key:")
        );
        assert!(server_config(&pem(KEY, CERT)).is_err());
    }

    /// A failed reload keeps the configuration in use; a good one
    /// replaces it.
    #[test]
    fn a_failed_reload_keeps_what_works() {
        let next = Arc::new(Mutex::new(pem(CERT, OTHER_KEY)));
        let source = next.clone();
        let tls = Tls::new(
            &pem(CERT, KEY),
            Box::new(move || Ok(source.lock().unwrap().clone())),
            Duration::from_secs(1),
        )
        .unwrap();
        let before = tls.current();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current()));
        *next.lock().unwrap() = pem(CERT, KEY);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current()));
        tls.set_source(Box::new(|| Err(io::Error::other("gone"))));
        assert_eq!(tls.reload().unwrap_err(), "gone");
    }

    /// The key never shows in a log line or a panic message.
    #[test]
    fn pem_debug_hides_the_key() {
        let shown = format!("{:?}", pem(CERT, KEY));
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    /// Files over the limit are refused, not read into memory whole.
    #[test]
    fn big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'x'; 256 * 1024 + 1]).unwrap();
        let files = TlsFiles {
            cert: big.clone(),
            key: big,
        };
        let e = files.read().unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
