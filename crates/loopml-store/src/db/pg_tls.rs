//! TLS to PostgreSQL with libpq's URL options: `sslmode` = `disable`, `allow`, `prefer` (the
//! default), `require`, `verify-ca`, `verify-full`, and `sslrootcert` = a PEM file of CA
//! certificates or `system` (the Mozilla roots). As in libpq, `prefer` and `require` encrypt
//! without checking the server's certificate unless `sslrootcert` is given; `verify-ca` checks
//! the chain, `verify-full` the chain and the host name. rustls with ring (the stack ureq
//! already uses); tokio-postgres parses the rest of the URL.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// What to check of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verify {
    /// Encrypt only (libpq's `prefer` / `require` without `sslrootcert`).
    Nothing,
    /// The chain up to a trusted root (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The Mozilla root set (`sslrootcert=system`, or no `sslrootcert` with `verify-*`).
    System,
    /// A PEM file.
    File(PathBuf),
}

/// The TLS settings of a PostgreSQL URL, with the URL tokio-postgres should parse.
#[derive(Debug, Clone)]
pub(super) struct PgUrl {
    /// The URL without the options handled here.
    pub url: String,
    mode: SslMode,
    verify: Verify,
    roots: Roots,
}

fn bad(url: &str, msg: String) -> StoreError {
    StoreError::InvalidConfig(format!(
        "invalid PostgreSQL URL {}: {msg}",
        super::postgres::redact(url)
    ))
}

/// `%XX` escapes decoded (paths in query strings).
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgUrl {
    /// Takes the TLS options out of `url`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut keep = Vec::new();
        let mut sslmode = None;
        let mut rootcert = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "sslmode" => sslmode = Some(v.to_string()),
                "sslrootcert" => rootcert = Some(percent_decode(v)),
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(bad(
                        url,
                        format!("{k}: client certificates are not supported yet"),
                    ));
                }
                _ => keep.push(kv),
            }
        }
        let roots = match rootcert.as_deref() {
            None | Some("system") => Roots::System,
            Some("") => return Err(bad(url, "sslrootcert is empty".into())),
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        let given_root = rootcert.is_some();
        let (mode, verify) = match sslmode.as_deref().unwrap_or("prefer") {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" if given_root => (SslMode::Prefer, Verify::Chain),
            "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
            "require" if given_root => (SslMode::Require, Verify::Chain),
            "require" => (SslMode::Require, Verify::Nothing),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::Full),
            other => {
                return Err(bad(
                    url,
                    format!(
                        "sslmode '{other}' (expected disable, allow, prefer, require, verify-ca \
                         or verify-full)"
                    ),
                ));
            }
        };
        let url = if keep.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", keep.join("&"))
        };
        Ok(Self {
            url,
            mode,
            verify,
            roots,
        })
    }

    /// The libpq-level mode to give tokio-postgres.
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// The rustls connector, or `None` for `sslmode=disable`. Reads the CA file now, so a
    /// missing or unreadable one is reported at start-up.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, StoreError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.verify {
            Verify::Nothing => Arc::new(EncryptOnly(Arc::clone(&provider))),
            Verify::Chain | Verify::Full => {
                let mut store = rustls::RootCertStore::empty();
                match &self.roots {
                    Roots::System => {
                        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    }
                    Roots::File(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| {
                                StoreError::InvalidConfig(format!(
                                    "sslrootcert {}: {e}",
                                    path.display()
                                ))
                            })?;
                        if certs.is_empty() {
                            return Err(StoreError::InvalidConfig(format!(
                                "sslrootcert {}: no PEM certificate in it",
                                path.display()
                            )));
                        }
                        for c in certs {
                            store.add(c).map_err(|e| {
                                StoreError::InvalidConfig(format!(
                                    "sslrootcert {}: {e}",
                                    path.display()
                                ))
                            })?;
                        }
                    }
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| StoreError::InvalidConfig(format!("TLS roots: {e}")))?;
                if self.verify == Verify::Full {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::InvalidConfig(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

/// libpq's `require`: the session is encrypted and the handshake signatures are checked, but
/// the certificate is not (no roots were configured to check it against).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_the_url() {
        let u = PgUrl::parse(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(u.url, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!((u.mode, u.verify.clone()), (SslMode::Require, Verify::Full));
        assert_eq!(u.roots, Roots::File("/etc/ca.pem".into()));
        let u = PgUrl::parse("postgres://db/x").unwrap();
        assert_eq!((u.mode, u.verify), (SslMode::Prefer, Verify::Nothing));
        let u = PgUrl::parse("postgres://db/x?sslmode=require").unwrap();
        assert_eq!((u.mode, u.verify), (SslMode::Require, Verify::Nothing));
        let u = PgUrl::parse("postgres://db/x?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(
            (u.mode, u.verify, u.roots),
            (SslMode::Require, Verify::Chain, Roots::System)
        );
        for (url, says) in [
            ("postgres://db/x?sslmode=sometimes", "sslmode 'sometimes'"),
            ("postgres://db/x?sslcert=/c.pem", "client certificates"),
            ("postgres://db/x?sslrootcert=", "sslrootcert is empty"),
        ] {
            let e = PgUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = PgUrl::parse("postgres://db/x?sslmode=verify-full&sslrootcert=/no/such.pem")
            .unwrap()
            .connector()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/no/such.pem"), "{e}");
    }
}
