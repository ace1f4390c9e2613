//! The cluster's public-key infrastructure: one CA per cluster, one
//! certificate per node.
//!
//! Layout of a certificate directory:
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem` | the cluster CA certificate (its `O` is the cluster name) | 0644 |
//! | `ca.key` | the CA's private key | 0600 |
//! | `<node>.pem` | node certificate: DNS name = node name, client + server auth | 0644 |
//! | `<node>.key` | the node's private key | 0600 |
//!
//! Invariant: nothing here overwrites an existing file unless the caller
//! asks for it (`force`), and a key file is never readable by others, not
//! even for an instant (it is created with mode 0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::NodeName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong with certificates. Where a command failed, no file was
/// written or changed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("{path} is not a valid PEM certificate or key: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("certificate {path} was not signed by the cluster CA in {ca}: {reason}")]
    NotSignedByCa {
        path: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    #[error("certificate {path} names node '{found}', but this node is '{expected}'")]
    NameMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("key {key} does not belong to certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("invalid cluster name '{0}': use 1 to 63 characters of a-z, 0-9 and '-'")]
    BadCluster(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Paths of the files in a certificate directory.
#[derive(Debug, Clone)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn node_cert(&self, node: &NodeName) -> PathBuf {
        self.dir.join(format!("{node}.pem"))
    }
    pub fn node_key(&self, node: &NodeName) -> PathBuf {
        self.dir.join(format!("{node}.key"))
    }
}

/// A file to write, with its mode.
struct Out {
    path: PathBuf,
    body: String,
    mode: u32,
}

/// Writes all files or none: existing files are refused before anything is
/// written (unless `force`), and each file is written whole to a temporary
/// name with its final mode, then renamed into place.
fn write_all(outs: &[Out], force: bool) -> Result<(), PkiError> {
    if !force {
        for out in outs {
            if out.path.exists() {
                return Err(PkiError::Exists {
                    path: out.path.clone(),
                });
            }
        }
    }
    for out in outs {
        let tmp = out.path.with_extension("tmp");
        let write = |tmp: &Path| -> std::io::Result<()> {
            let _ = fs::remove_file(tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(out.mode)
                .open(tmp)?;
            f.write_all(out.body.as_bytes())?;
            f.sync_all()?;
            fs::rename(tmp, &out.path)
        };
        write(&tmp).map_err(|source| PkiError::Write {
            path: out.path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
            PkiError::Write {
                path: dir.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn check_cluster_name(name: &str) -> Result<(), PkiError> {
    // The cluster name has the same shape as a node name: it goes into
    // certificates and every gossip message.
    name.parse::<NodeName>()
        .map(|_| ())
        .map_err(|_| PkiError::BadCluster(name.to_owned()))
}

/// Creates the cluster CA in `dir`. Refuses to replace an existing CA
/// unless `force`.
pub fn init_ca(dir: &Path, cluster: &str, force: bool) -> Result<(), PkiError> {
    check_cluster_name(cluster)?;
    let certs = CertDir::new(dir);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, cluster);
    dn.push(DnType::CommonName, format!("ringhost cluster CA {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key)?;
    ensure_dir(dir)?;
    write_all(
        &[
            Out {
                path: certs.ca_key(),
                body: key.serialize_pem(),
                mode: 0o600,
            },
            Out {
                path: certs.ca_cert(),
                body: cert.pem(),
                mode: 0o644,
            },
        ],
        force,
    )
}

/// Issues a certificate and key for `node`, signed by the CA in `dir`.
pub fn issue_node(dir: &Path, node: &NodeName, force: bool) -> Result<(), PkiError> {
    let certs = CertDir::new(dir);
    let ca_pem = read(&certs.ca_cert())?;
    let ca_key_pem = read(&certs.ca_key())?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Malformed {
        path: certs.ca_key(),
        reason: e.to_string(),
    })?;
    let ca_params =
        CertificateParams::from_ca_cert_pem(&ca_pem).map_err(|e| PkiError::Malformed {
            path: certs.ca_cert(),
            reason: e.to_string(),
        })?;
    let cluster = cluster_of_ca(&certs.ca_cert(), &ca_pem)?;
    // rcgen signs with an issuer `Certificate`; re-signing the CA's params
    // with its own key yields the same subject and key, which is all that
    // the chain check looks at.
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![node.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, cluster);
    dn.push(DnType::CommonName, node.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    write_all(
        &[
            Out {
                path: certs.node_key(node),
                body: key.serialize_pem(),
                mode: 0o600,
            },
            Out {
                path: certs.node_cert(node),
                body: cert.pem(),
                mode: 0o644,
            },
        ],
        force,
    )
}

fn parse_pem_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let out = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if out.is_empty() {
        return Err(PkiError::Malformed {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(out)
}

/// The cluster name: the `O` of the CA certificate.
fn cluster_of_ca(path: &Path, pem: &str) -> Result<String, PkiError> {
    let der = parse_pem_certs(path, pem)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let org = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .ok_or_else(|| PkiError::Malformed {
            path: path.to_owned(),
            reason: "the CA certificate names no cluster (no O attribute)".into(),
        })?;
    Ok(org.to_owned())
}

/// The node name a certificate speaks for: its first DNS subject
/// alternative name. `None` for a certificate that names no node.
pub fn node_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
        _ => None,
    })
}

/// A node's loaded and checked identity: what the mesh needs for mutual TLS.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node: NodeName,
    pub cluster: String,
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// Loads the identity of `node` from `dir` and checks it fully: the files
/// exist and parse, the certificate chains to the cluster CA, it names this
/// node, and the key belongs to it.
pub fn load_identity(dir: &Path, node: &NodeName) -> Result<Identity, PkiError> {
    let certs = CertDir::new(dir);
    let ca_path = certs.ca_cert();
    let ca_pem = read(&ca_path)?;
    let ca = parse_pem_certs(&ca_path, &ca_pem)?.remove(0);
    let cluster = cluster_of_ca(&ca_path, &ca_pem)?;
    let cert_path = certs.node_cert(node);
    let chain = parse_pem_certs(&cert_path, &read(&cert_path)?)?;
    let key_path = certs.node_key(node);
    let key_pem = read(&key_path)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::Malformed {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;

    crate::certs::verify_chain(&ca, &chain).map_err(|reason| PkiError::NotSignedByCa {
        path: cert_path.clone(),
        ca: ca_path.clone(),
        reason,
    })?;
    let found = node_name_of(&chain[0]).unwrap_or_default();
    if found != node.as_str() {
        return Err(PkiError::NameMismatch {
            path: cert_path,
            found,
            expected: node.to_string(),
        });
    }
    if !crate::certs::key_matches(&chain[0], &key) {
        return Err(PkiError::KeyMismatch {
            key: key_path,
            cert: cert_path,
        });
    }
    Ok(Identity {
        node: node.clone(),
        cluster,
        ca,
        chain,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().expect("valid test name")
    }

    #[test]
    fn init_issue_load_round_trip_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("certs");
        init_ca(&d, "demo", false).expect("init");
        issue_node(&d, &name("n1"), false).expect("issue");
        let id = load_identity(&d, &name("n1")).expect("load");
        assert_eq!(id.cluster, "demo");
        assert_eq!(node_name_of(&id.chain[0]).as_deref(), Some("n1"));
        for key in ["ca.key", "n1.key"] {
            let mode = fs::metadata(d.join(key)).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn never_overwrites_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        init_ca(d, "demo", false).expect("init");
        let before = fs::read(d.join("ca.pem")).expect("ca");
        assert!(matches!(
            init_ca(d, "demo", false),
            Err(PkiError::Exists { .. })
        ));
        assert_eq!(before, fs::read(d.join("ca.pem")).expect("ca"));
        issue_node(d, &name("n1"), false).expect("issue");
        let cert = fs::read(d.join("n1.pem")).expect("cert");
        assert!(matches!(
            issue_node(d, &name("n1"), false),
            Err(PkiError::Exists { .. })
        ));
        assert_eq!(cert, fs::read(d.join("n1.pem")).expect("cert"));
        issue_node(d, &name("n1"), true).expect("forced reissue");
        assert_ne!(cert, fs::read(d.join("n1.pem")).expect("cert"));
    }

    #[test]
    fn refuses_foreign_ca_wrong_name_and_wrong_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        init_ca(&a, "alpha", false).expect("init a");
        init_ca(&b, "beta", false).expect("init b");
        issue_node(&b, &name("n1"), false).expect("issue");
        issue_node(&a, &name("n2"), false).expect("issue");
        // n1's certificate from cluster beta, presented to cluster alpha.
        fs::copy(b.join("n1.pem"), a.join("n1.pem")).expect("copy");
        fs::copy(b.join("n1.key"), a.join("n1.key")).expect("copy");
        assert!(matches!(
            load_identity(&a, &name("n1")),
            Err(PkiError::NotSignedByCa { .. })
        ));
        // n2's certificate under the file name of n3.
        fs::copy(a.join("n2.pem"), a.join("n3.pem")).expect("copy");
        fs::copy(a.join("n2.key"), a.join("n3.key")).expect("copy");
        let err = load_identity(&a, &name("n3")).expect_err("wrong name");
        assert!(err.to_string().contains("names node 'n2'"), "{err}");
        // n2's certificate with another node's key.
        issue_node(&a, &name("n4"), false).expect("issue");
        fs::copy(a.join("n4.key"), a.join("n2.key")).expect("copy");
        assert!(matches!(
            load_identity(&a, &name("n2")),
            Err(PkiError::KeyMismatch { .. })
        ));
        // Missing files name the path.
        let err = load_identity(&a, &name("n9")).expect_err("missing");
        assert!(err.to_string().contains("n9.pem"), "{err}");
    }
}
