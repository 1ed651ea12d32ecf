//! TLS to PostgreSQL with rustls: libpq's `sslmode` values, the certificate
//! files (`sslrootcert`, `sslcert`, `sslkey`) found as libpq finds them, and
//! the driver's `MakeTlsConnect` wired to a rustls client.
//!
//! Pure Rust (ring): a machine needs no OpenSSL. Files are read at each new
//! connection, as libpq does, so a renewed certificate needs no restart.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{io_reason, BridgeError};

/// libpq's `sslmode`, less `allow` (plain first, TLS as a fallback), which
/// the driver cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is checked
    /// only when a root certificate file exists (libpq's rule).
    #[default]
    Prefer,
    /// TLS or nothing; checked as `verify-ca` when a root certificate file
    /// exists, else not checked.
    Require,
    /// TLS, the server's certificate signed by a trusted CA.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Parses a libpq value; `allow` is known but refused.
    pub(crate) fn parse(value: &str) -> Result<SslMode, SslModeError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(SslModeError::AllowUnsupported),
            _ => Err(SslModeError::Invalid),
        }
    }

    /// Whether this mode refuses a connection it cannot verify.
    fn must_verify(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Why an `sslmode` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslModeError {
    Invalid,
    AllowUnsupported,
}

/// The certificate files: each from pg-url, else the module's
/// `pg-ssl*` config, else (at connect time) libpq's default under
/// `~/.postgresql/`. `rootcert` may be `system`: the system's trusted CAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslFiles {
    pub rootcert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl SslFiles {
    /// `self`'s values where set, else `defaults`'s.
    pub(crate) fn or(&self, defaults: &SslFiles) -> SslFiles {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        SslFiles {
            rootcert: pick(&self.rootcert, &defaults.rootcert),
            cert: pick(&self.cert, &defaults.cert),
            key: pick(&self.key, &defaults.key),
        }
    }
}

/// libpq's `sslrootcert=system`.
const SYSTEM_ROOTS: &str = "system";

/// Checks what can be known before connecting: `sslrootcert=system` needs
/// `verify-full`, as in libpq (a CA anyone can buy a certificate from
/// proves nothing without the host name).
pub(crate) fn check_mode(mode: SslMode, files: &SslFiles) -> Result<(), BridgeError> {
    if files.rootcert.as_deref() == Some(SYSTEM_ROOTS) && mode != SslMode::VerifyFull {
        return Err(BridgeError::Config(format!(
            "sslrootcert=system needs sslmode=verify-full (sslmode is {})",
            mode.as_str()
        )));
    }
    Ok(())
}

/// The connector for one connection attempt: reads the files now.
///
/// `home` is where libpq's defaults live (`$HOME/.postgresql/...`).
pub(crate) fn connector(
    mode: SslMode,
    files: &SslFiles,
    home: Option<&Path>,
) -> Result<MakeRustls, BridgeError> {
    check_mode(mode, files)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(mode, files.rootcert.as_deref(), home)?;
    let verify_name = mode == SslMode::VerifyFull;
    let verifier = Arc::new(PgVerifier {
        roots: roots.as_ref().map(|(store, _)| Arc::clone(store)),
        verify_name,
        provider: Arc::clone(&provider),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BridgeError::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match load_client_cert(files, home)? {
        Some((chain, key, cert_path)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                BridgeError::Config(format!(
                    "sslcert {} and sslkey do not go together: {e}",
                    cert_path.display()
                ))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    // PostgreSQL 17 checks ALPN when a client sends it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustls {
        config: Arc::new(config),
        verify_name,
        roots_label: roots.map(|(_, label)| label),
    })
}

/// The root store and how to name it in errors, or `None` when the server's
/// certificate is not to be checked (no root file under prefer/require).
fn load_roots(
    mode: SslMode,
    rootcert: Option<&str>,
    home: Option<&Path>,
) -> Result<Option<(Arc<RootCertStore>, String)>, BridgeError> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    if rootcert == Some(SYSTEM_ROOTS) {
        return system_roots().map(Some);
    }
    let path = match rootcert {
        Some(p) => PathBuf::from(p),
        None => match home {
            Some(h) => h.join(".postgresql").join("root.crt"),
            None if mode.must_verify() => {
                return Err(BridgeError::Config(format!(
                    "sslmode={} needs a root certificate: set sslrootcert (or \
                     consistency.pg-sslrootcert); HOME is not set, so ~/.postgresql/root.crt \
                     cannot be used",
                    mode.as_str()
                )))
            }
            None => return Ok(None),
        },
    };
    // libpq looks only at whether the file is there: absent, it verifies
    // nothing under prefer and require, and refuses the verifying modes.
    if std::fs::metadata(&path).is_err() {
        if mode.must_verify() {
            return Err(BridgeError::Config(format!(
                "root certificate file {} does not exist; sslmode={} needs it (set \
                 sslrootcert or consistency.pg-sslrootcert, or sslrootcert=system for the \
                 system's CAs)",
                path.display(),
                mode.as_str()
            )));
        }
        return Ok(None);
    }
    let certs = read_certs(&path, "sslrootcert")?;
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| {
            BridgeError::Config(format!(
                "sslrootcert {}: a certificate cannot be used as a root: {e}",
                path.display()
            ))
        })?;
    }
    Ok(Some((
        Arc::new(store),
        format!("sslrootcert {}", path.display()),
    )))
}

fn system_roots() -> Result<(Arc<RootCertStore>, String), BridgeError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    // Unparseable entries of the system store are skipped, as OpenSSL does.
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(BridgeError::Config(
            "sslrootcert=system: no trusted CA certificates found on this system".to_string(),
        ));
    }
    Ok((Arc::new(store), "the system's trusted CAs".to_string()))
}

/// The client certificate chain and key, when the certificate file exists
/// (libpq sends none, silently, when it does not).
#[allow(clippy::type_complexity)]
fn load_client_cert(
    files: &SslFiles,
    home: Option<&Path>,
) -> Result<
    Option<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
    )>,
    BridgeError,
> {
    let default = |name: &str| home.map(|h| h.join(".postgresql").join(name));
    let Some(cert_path) = files
        .cert
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.crt"))
    else {
        return Ok(None);
    };
    if std::fs::metadata(&cert_path).is_err() {
        return Ok(None);
    }
    let chain = read_certs(&cert_path, "sslcert")?;
    let Some(key_path) = files
        .key
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.key"))
    else {
        return Err(BridgeError::Config(format!(
            "sslcert {} is given but no sslkey (and HOME is not set)",
            cert_path.display()
        )));
    };
    let key = read_key(&key_path)?;
    Ok(Some((chain, key, cert_path)))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, BridgeError> {
    let bytes = std::fs::read(path).map_err(|e| {
        BridgeError::Config(format!(
            "cannot read {what} {}: {}",
            path.display(),
            io_reason(&e)
        ))
    })?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(BridgeError::Config(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ))),
        Err(e) => Err(BridgeError::Config(format!(
            "{what} {} is not valid PEM: {}",
            path.display(),
            pem_reason(&e)
        ))),
    }
}

/// Reads the private key, refusing one that others may read, as libpq does.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, BridgeError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        BridgeError::Config(format!(
            "certificate present, but not private key file {shown}: {}",
            io_reason(&e)
        ))
    })?;
    if !meta.is_file() {
        return Err(BridgeError::Config(format!(
            "private key file {shown} is not a regular file"
        )));
    }
    key_permissions_ok(meta.uid(), meta.permissions().mode(), current_uid())
        .map_err(|why| BridgeError::Config(format!("private key file {shown} {why}")))?;
    let bytes = std::fs::read(path).map_err(|e| {
        BridgeError::Config(format!("cannot read sslkey {shown}: {}", io_reason(&e)))
    })?;
    if bytes.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(BridgeError::Config(format!(
            "sslkey {shown} is encrypted; give an unencrypted key (sslpassword is not supported)"
        )));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        BridgeError::Config(format!(
            "sslkey {shown} holds no usable private key: {}",
            pem_reason(&e)
        ))
    })
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// libpq's rule: a key owned by the current user must be u=rw (0600) or
/// less; one owned by root may also be group-readable (0640).
fn key_permissions_ok(owner: u32, mode: u32, me: u32) -> Result<(), &'static str> {
    let too_open = if owner == me {
        mode & 0o077 != 0
    } else if owner == 0 {
        mode & 0o037 != 0
    } else {
        false
    };
    if too_open {
        Err(
            "has group or world access; it must be u=rw (0600) or less if owned by \
             the current user, or u=rw,g=r (0640) or less if owned by root",
        )
    } else {
        Ok(())
    }
}

/// A PEM error in words that quote nothing from the file.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line".to_string(),
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_string(),
        E::Base64Decode(_) => "bad base64".to_string(),
        E::Io(io) => io_reason(io),
        E::NoItemsFound => "nothing found".to_string(),
        _ => "malformed".to_string(),
    }
}

/// Checks the server's certificate the way the mode asks: against the
/// roots when there are any, and the host name under `verify-full`.
#[derive(Debug)]
struct PgVerifier {
    roots: Option<Arc<RootCertStore>>,
    verify_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            // prefer/require without a root file: encrypted, not authenticated.
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.verify_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a TLS handshake with PostgreSQL failed, in an operator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The certificate chain does not lead to a trusted root.
    UnknownCa { roots: String },
    /// verify-full: the certificate does not name the host.
    WrongHost { host: String, names: Vec<String> },
    /// The certificate's validity period is over.
    Expired,
    /// The certificate's validity period has not begun.
    NotYetValid,
    /// Another certificate problem, as rustls words it.
    BadCertificate(String),
    /// verify-full with a host that is neither a DNS name nor an IP address.
    BadHostName(String),
    /// The server ended the handshake with an alert (a refused client
    /// certificate, an unsupported version, ...).
    Alert(String),
    /// The handshake broke for another reason (I/O, protocol).
    Handshake(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::UnknownCa { roots } => write!(
                f,
                "server certificate is not signed by a trusted CA (checked against {roots})"
            ),
            TlsError::WrongHost { host, names } => {
                let names = if names.is_empty() {
                    "no host names".to_string()
                } else {
                    names.join(", ")
                };
                write!(
                    f,
                    "server certificate does not match host name '{host}' (it names {names}); \
                     sslmode=verify-full checks the name: connect by a name it holds"
                )
            }
            TlsError::Expired => write!(f, "server certificate has expired"),
            TlsError::NotYetValid => write!(f, "server certificate is not valid yet"),
            TlsError::BadCertificate(r) => write!(f, "server certificate refused: {r}"),
            TlsError::BadHostName(h) => write!(
                f,
                "host '{h}' is not a DNS name or IP address, so sslmode=verify-full cannot check it"
            ),
            TlsError::Alert(a) => write!(f, "the server ended the TLS handshake (alert {a})"),
            TlsError::Handshake(r) => write!(f, "TLS handshake failed: {r}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// Reads what tokio-rustls returned for a failed handshake.
    fn from_handshake(e: io::Error, host: &str, roots: Option<&str>) -> TlsError {
        let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) else {
            return TlsError::Handshake(io_reason(&e));
        };
        match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsError::UnknownCa {
                    roots: roots.unwrap_or("the given roots").to_string(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => TlsError::WrongHost {
                    host: host.to_string(),
                    names: presented.iter().filter_map(|n| plain_name(n)).collect(),
                },
                CertificateError::NotValidForName => TlsError::WrongHost {
                    host: host.to_string(),
                    names: Vec::new(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsError::NotYetValid
                }
                other => TlsError::BadCertificate(other.to_string()),
            },
            rustls::Error::AlertReceived(alert) => TlsError::Alert(format!("{alert:?}")),
            other => TlsError::Handshake(other.to_string()),
        }
    }
}

/// A certificate's name as webpki lists it (`DnsName("db")`,
/// `IpAddress(10.0.0.1)`) shown plainly; other kinds of names are left out.
fn plain_name(listed: &str) -> Option<String> {
    if let Some(dns) = listed
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        return Some(dns.to_string());
    }
    listed
        .strip_prefix("IpAddress(")
        .and_then(|r| r.strip_suffix(')'))
        .map(str::to_string)
}

/// The host as errors show it. A URL password holding a raw `@` spills its
/// tail into the host (`postgres://u:p@ss@h/db` has host `ss@h`), so a host
/// with `@` is not shown.
fn shown_host(host: &str) -> String {
    if host.contains('@') {
        "(not shown: it holds '@')".to_string()
    } else {
        host.to_string()
    }
}

/// The driver's TLS factory: one per connection attempt.
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
    verify_name: bool,
    roots_label: Option<String>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsError> {
        let name = match ServerName::try_from(host.to_string()) {
            Ok(name) => name,
            Err(_) if self.verify_name => return Err(TlsError::BadHostName(shown_host(host))),
            // Nothing checks the name: an address sends no SNI, as libpq
            // sends none for what is not a host name.
            Err(_) => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
        };
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name,
            host: shown_host(host),
            roots_label: self.roots_label.clone(),
        })
    }
}

/// One handshake.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    host: String,
    roots_label: Option<String>,
}

type HandshakeFuture = Pin<Box<dyn Future<Output = Result<RustlsStream, TlsError>> + Send>>;

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = TlsError;
    type Future = HandshakeFuture;

    fn connect(self, stream: Socket) -> HandshakeFuture {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| TlsError::from_handshake(e, &self.host, self.roots_label.as_deref()))
        })
    }
}

/// The encrypted stream the driver talks over.
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM runs without channel binding (not SCRAM-SHA-256-PLUS); the
        // certificate checks above are what authenticate the server.
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(SslMode::parse(mode.as_str()), Ok(mode));
        }
        assert_eq!(SslMode::parse("allow"), Err(SslModeError::AllowUnsupported));
        assert_eq!(SslMode::parse("verify_full"), Err(SslModeError::Invalid));
        assert_eq!(SslMode::parse("Require"), Err(SslModeError::Invalid));
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[test]
    fn key_permissions_follow_libpq() {
        let me = 1000;
        assert!(key_permissions_ok(me, 0o100600, me).is_ok());
        assert!(key_permissions_ok(me, 0o100400, me).is_ok());
        assert!(key_permissions_ok(me, 0o100640, me).is_err());
        assert!(key_permissions_ok(me, 0o100604, me).is_err());
        // Owned by root: group-readable is fine, group-writable is not.
        assert!(key_permissions_ok(0, 0o100640, me).is_ok());
        assert!(key_permissions_ok(0, 0o100660, me).is_err());
        assert!(key_permissions_ok(0, 0o100644, me).is_err());
        // Running as root, the root rule for "owned by me" is the strict one.
        assert!(key_permissions_ok(0, 0o100640, 0).is_err());
    }

    #[test]
    fn system_roots_need_verify_full() {
        let files = SslFiles {
            rootcert: Some("system".into()),
            ..SslFiles::default()
        };
        for mode in [SslMode::Prefer, SslMode::Require, SslMode::VerifyCa] {
            let err = check_mode(mode, &files).unwrap_err();
            assert!(
                err.to_string().contains("needs sslmode=verify-full"),
                "{err}"
            );
        }
        assert!(check_mode(SslMode::VerifyFull, &files).is_ok());
    }

    #[test]
    fn missing_root_file_fails_only_the_verifying_modes() {
        let dir = std::env::temp_dir().join(format!("bridge-tls-{}", std::process::id()));
        let missing = dir.join("nope.crt");
        let path = missing.to_str().unwrap();
        for mode in [SslMode::Prefer, SslMode::Require] {
            assert!(matches!(load_roots(mode, Some(path), None), Ok(None)));
        }
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let Err(err) = load_roots(mode, Some(path), None) else {
                panic!("{mode:?} accepted a missing root file");
            };
            let text = err.to_string();
            assert!(text.contains("does not exist"), "{text}");
            assert!(text.contains(path), "{text}");
        }
        // No HOME and no sslrootcert: the default cannot be found either.
        let Err(err) = load_roots(SslMode::VerifyCa, None, None) else {
            panic!("verify-ca without a root accepted");
        };
        assert!(err.to_string().contains("HOME is not set"), "{err}");
    }

    #[test]
    fn files_from_the_url_win_over_the_configs() {
        let url = SslFiles {
            rootcert: Some("url-ca".into()),
            ..SslFiles::default()
        };
        let configs = SslFiles {
            rootcert: Some("conf-ca".into()),
            cert: Some("conf-cert".into()),
            key: None,
        };
        assert_eq!(
            url.or(&configs),
            SslFiles {
                rootcert: Some("url-ca".into()),
                cert: Some("conf-cert".into()),
                key: None,
            }
        );
    }

    #[test]
    fn a_host_with_an_at_sign_is_not_shown() {
        let mut make = connector(SslMode::Require, &SslFiles::default(), None).unwrap();
        let connect = make.make_tls_connect("secret@h").unwrap();
        assert!(!connect.host.contains("secret"), "{}", connect.host);
        let mut strict = MakeRustls {
            verify_name: true,
            ..make
        };
        let Err(err) = strict.make_tls_connect("secret@h") else {
            panic!("verify-full took a host with '@'");
        };
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn certificate_names_are_shown_plainly() {
        assert_eq!(
            plain_name("DnsName(\"db.internal\")").as_deref(),
            Some("db.internal")
        );
        assert_eq!(
            plain_name("IpAddress(10.0.0.1)").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(plain_name("IpAddress(::1)").as_deref(), Some("::1"));
        assert_eq!(plain_name("DirectoryName"), None);
        assert_eq!(plain_name("UniformResourceIdentifier(\"x\")"), None);
    }

    #[test]
    fn error_texts_are_readable() {
        let wrong = TlsError::WrongHost {
            host: "127.0.0.1".into(),
            names: vec!["localhost".into()],
        };
        assert_eq!(
            wrong.to_string(),
            "server certificate does not match host name '127.0.0.1' (it names localhost); \
             sslmode=verify-full checks the name: connect by a name it holds"
        );
        let ca = TlsError::UnknownCa {
            roots: "sslrootcert /x/ca.pem".into(),
        };
        assert_eq!(
            ca.to_string(),
            "server certificate is not signed by a trusted CA (checked against sslrootcert /x/ca.pem)"
        );
    }
}
