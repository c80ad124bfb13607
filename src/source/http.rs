//! HTTP plumbing shared by the OCI registry client ([`super::oci`]) and the Helm repository
//! client ([`super::helm_index`]): a reqwest client with the TLS material of a `certSecretRef`,
//! and a streamed download into a file that stops at a size limit and hashes while it writes.

use std::io::Write;
use std::time::Duration;

use crate::source::artifact::HashingWriter;
use crate::util::chain;

/// TLS material of a `certSecretRef` Secret (Flux's keys: `ca.crt`, `tls.crt`, `tls.key`), all
/// PEM. The CA bundle is trusted in addition to the system roots; a client certificate needs
/// both `cert_pem` and `key_pem`.
#[derive(Clone, Default)]
pub struct TlsConfig {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret; say only what is present.
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca_pem.is_some())
            .field("cert", &self.cert_pem.is_some())
            .field("key", &self.key_pem.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A client for one fetch: `timeout` bounds each request (connect to last body byte), the TLS
/// material of `tls` is used for https. Errors name the bad PEM (`ca.crt`, `tls.crt`/`tls.key`),
/// never its content. reqwest follows redirects (at most 10) and drops `Authorization` on a
/// redirect to another host.
pub fn client(tls: &TlsConfig, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; the binary installs ring, so do tests.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)));
    if let Some(pem) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("invalid CA certificate (ca.crt): {}", chain(&e)))?;
        b = b.tls_certs_merge(certs);
    }
    match (&tls.cert_pem, &tls.key_pem) {
        (Some(cert), Some(key)) => {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "invalid client certificate (tls.crt/tls.key): {}",
                    chain(&e)
                )
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err("client certificate needs both tls.crt and tls.key".into()),
    }
    b.build().map_err(|e| {
        // Certificates are only parsed for good here; name the material, never show it.
        let material = match (&tls.ca_pem, &tls.cert_pem) {
            (Some(_), Some(_)) => " with the TLS material (ca.crt, tls.crt, tls.key)",
            (Some(_), None) => " with the CA certificate (ca.crt)",
            (None, Some(_)) => " with the client certificate (tls.crt, tls.key)",
            (None, None) => "",
        };
        format!("cannot build an HTTP client{material}: {}", chain(&e))
    })
}

/// What [`download_to`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// `sha256:<hex>` of the bytes written.
    pub digest: String,
    /// Bytes written.
    pub size: u64,
}

/// Why a download stopped.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("response is bigger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the response: {0}")]
    Read(String),
    #[error("writing the download: {0}")]
    Write(#[source] std::io::Error),
}

/// Streams the body of `resp` into `out`, hashing (sha256) and counting as it goes; stops with
/// [`DownloadError::TooLarge`] as soon as more than `max_size` bytes arrive (a declared
/// `Content-Length` over the limit stops before any byte is read). Memory stays at one chunk.
pub async fn download_to(
    mut resp: reqwest::Response,
    out: impl Write,
    max_size: u64,
) -> Result<Downloaded, DownloadError> {
    if resp.content_length().is_some_and(|n| n > max_size) {
        return Err(DownloadError::TooLarge { limit: max_size });
    }
    let mut w = HashingWriter::new(out);
    let mut size = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| DownloadError::Read(chain(&e)))?
    {
        size += chunk.len() as u64;
        if size > max_size {
            return Err(DownloadError::TooLarge { limit: max_size });
        }
        w.write_all(&chunk).map_err(DownloadError::Write)?;
    }
    let (mut out, digest, size) = w.finish();
    out.flush().map_err(DownloadError::Write)?;
    Ok(Downloaded { digest, size })
}
