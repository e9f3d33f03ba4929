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

/// A test certificate authority: a self-signed CA certificate whose key signs leaf
/// certificates, as a domain's real CA would (ECDSA P-256, fresh for each test).
pub struct TestCa {
    /// PEM file of the CA certificate: what a peer configures as its `ca_file`.
    pub ca_path: PathBuf,
    dir: PathBuf,
    certificate: rcgen::Certificate,
    key_pair: rcgen::KeyPair,
}

impl TestCa {
    /// Writes `<label>-ca.pem` into `dir`. `label` is also the CA's common name: give two
    /// CAs of one test different labels, so that webpki tells them apart by name.
    pub fn new(dir: &Path, label: &str) -> TestCa {
        let key_pair = rcgen::KeyPair::generate().expect("generate CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{label} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let certificate = params.self_signed(&key_pair).expect("self-sign CA");
        let ca_path = dir.join(format!("{label}-ca.pem"));
        fs::write(&ca_path, certificate.pem()).expect("write CA certificate");
        TestCa {
            ca_path,
            dir: dir.to_owned(),
            certificate,
            key_pair,
        }
    }

    /// Issues a leaf certificate for `names` (DNS names or IP literals, as subject
    /// alternative names), valid from 1975 to 4096 (rcgen's defaults), usable as server
    /// and as client certificate. Writes `<stem>-cert.pem` and `<stem>-key.pem`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> TestPki {
        let params = self.leaf_params(names);
        self.sign(stem, params)
    }

    /// As [`TestCa::issue`], but valid only between two dates, each (year, month, day) at
    /// midnight UTC: for expired and not-yet-valid certificates.
    pub fn issue_valid_between(
        &self,
        stem: &str,
        names: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> TestPki {
        let mut params = self.leaf_params(names);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        self.sign(stem, params)
    }

    fn leaf_params(&self, names: &[&str]) -> rcgen::CertificateParams {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.clone());
        }
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params
    }

    fn sign(&self, stem: &str, params: rcgen::CertificateParams) -> TestPki {
        let key_pair = rcgen::KeyPair::generate().expect("generate leaf key");
        let certificate = params
            .signed_by(&key_pair, &self.certificate, &self.key_pair)
            .expect("sign leaf");
        let cert_path = self.dir.join(format!("{stem}-cert.pem"));
        let key_path = self.dir.join(format!("{stem}-key.pem"));
        fs::write(&cert_path, certificate.pem()).expect("write leaf certificate");
        fs::write(&key_path, key_pair.serialize_pem()).expect("write leaf key");
        TestPki {
            cert_path,
            key_path,
            ca_path: self.ca_path.clone(),
        }
    }
}
