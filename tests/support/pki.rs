//! Test certificates, generated fresh with rcgen for each test (nothing checked in, no
//! expiry to trip over).

// Not every integration test binary that includes `support` needs certificates.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// Paths to a generated certificate and its key.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// PEM certificate chain (one self-signed certificate).
    pub cert_path: PathBuf,
    /// PEM PKCS#8 private key of `cert_path`.
    pub key_path: PathBuf,
    /// PEM CA certificate a client should trust; the certificate itself when self-signed.
    pub ca_path: PathBuf,
}

impl TestPki {
    /// The pair as the proxy's configuration names it.
    pub fn tls_files(&self) -> coi_proxy::config::types::TlsFiles {
        coi_proxy::config::types::TlsFiles {
            certificate: self.cert_path.clone(),
            private_key: self.key_path.clone(),
        }
    }
}

/// Writes `cert.pem` and `key.pem` into `dir`: one self-signed ECDSA P-256 certificate
/// valid for `names` (DNS names or IP literals, as subject alternative names).
///
/// Panics on failure: this is test setup, and a clear panic is the best report.
pub fn self_signed(dir: &Path, names: &[&str]) -> TestPki {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    fs::write(&cert_path, generated.cert.pem()).expect("write cert.pem");
    fs::write(&key_path, generated.key_pair.serialize_pem()).expect("write key.pem");
    TestPki {
        ca_path: cert_path.clone(),
        cert_path,
        key_path,
    }
}
