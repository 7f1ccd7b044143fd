//! Black-box tests of an https endpoint: the mock behind a TLS server on loopback, with a
//! certificate from a test CA (`tests/tls/`). Trusted through `SSL_CERT_FILE`, every row is
//! answered; untrusted, the run stops at once (exit 3) instead of retrying every row.

mod common;

use std::path::Path;
use std::sync::Arc;

use batchgen::mock::MockConfig;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Starts a TLS server on the endpoint's runtime that hands each connection to the mock;
/// returns its https base URL.
fn tls_front(ep: &Endpoint) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("localhost.crt"))
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key")).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let plain = ep
        .url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let listener = ep
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    ep.rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, plain) = (acceptor.clone(), plain.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut mock) = tokio::net::TcpStream::connect(&plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut mock).await;
                }
            });
        }
    });
    format!("https://127.0.0.1:{port}/v1")
}

fn run_tls(
    url: &str,
    ca: Option<&Path>,
    dir: &Path,
) -> (Option<i32>, String, Vec<serde_json::Value>) {
    let input = write(dir, "rows.jsonl", &prompts_jsonl(40));
    let out = dir.join("out.jsonl");
    let mut cmd = batchgen();
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let output = cmd
        .args(["run", input.to_str().expect("path"), "-o"])
        .arg(&out)
        .args(["--base-url", url, "-c", "8", "--retry-delay", "5ms"])
        .output()
        .expect("run batchgen");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains(SECRET));
    let recs = if out.exists() {
        records(&out)
    } else {
        Vec::new()
    };
    (output.status.code(), stderr, recs)
}

#[test]
fn an_https_endpoint_with_a_trusted_certificate_answers_every_row() {
    let ep = Endpoint::start(MockConfig::default());
    let url = tls_front(&ep);
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/ca.crt");
    let (code, stderr, recs) = run_tls(&url, Some(&ca), dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(recs.len(), 40);
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{recs:?}");
    assert_eq!(ep.stats().requests, 40);
}

#[test]
fn an_untrusted_certificate_stops_the_run_instead_of_retrying_every_row() {
    let ep = Endpoint::start(MockConfig::default());
    let url = tls_front(&ep);
    let dir = tempfile::tempdir().expect("tmp");
    let (code, stderr, recs) = run_tls(&url, None, dir.path());
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("TLS certificate is not trusted"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, 0, "nothing reached the endpoint");
    // Only the rows already trying when the first refusal came have a record, each after one
    // attempt; the rest are left for the rerun.
    assert!(recs.len() <= 8, "{} records", recs.len());
    assert!(recs.iter().all(|r| r["attempts"] == 1), "{recs:?}");
}
