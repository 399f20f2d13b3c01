//! `ssl_verify` modes against an HTTPS fake master whose CA is generated per test.

mod common;

use common::*;
use dcos_token_proxy::dcos::config::SslVerify;
use http::StatusCode;

fn write_ca(pki: &TestPki) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &pki.ca_pem).unwrap();
    f
}

#[tokio::test]
async fn a_ca_bundle_path_verifies_the_master() {
    let pki = test_pki(&["localhost"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let ca = write_ca(&pki);
    let proxy = start_proxy_to(&master.url, SslVerify::CaBundle(ca.path().into())).await;
    let (parts, body) = get(&format!("{}/service/marathon/v2/info", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body:?}");
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={VALID}").as_str())
    );
    // Host carries the name the certificate was checked against.
    assert_eq!(
        master.last().headers["host"],
        format!("localhost:{}", master.addr.port()).as_str()
    );
    // WebSockets work over TLS too.
    assert_eq!(ws_echo(proxy.addr, "secure").await, "secure");
}

#[tokio::test]
async fn the_os_trust_store_does_not_trust_a_private_ca() {
    let pki = test_pki(&["localhost"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let proxy = start_proxy_to(&master.url, SslVerify::System).await;
    let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(
            "certificate not trusted: set core.ssl_verify to the cluster CA (dcos_ca.crt)"
        ),
        "{text}"
    );
    assert!(text.contains(&master.url), "{text}");
    assert!(
        master.seen().is_empty(),
        "a request got through an untrusted TLS session"
    );
}

#[tokio::test]
async fn the_host_name_is_checked() {
    let pki = test_pki(&["master.other.example"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let ca = write_ca(&pki);
    let proxy = start_proxy_to(&master.url, SslVerify::CaBundle(ca.path().into())).await;
    let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&body).contains("host name"),
        "{body:?}"
    );
    assert!(master.seen().is_empty());
}

#[tokio::test]
async fn ssl_verify_false_skips_verification() {
    let pki = test_pki(&["master.other.example"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let proxy = start_proxy_to(&master.url, SslVerify::Insecure).await;
    let (parts, _) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn a_ca_bundle_without_certificates_stops_startup_with_the_path() {
    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), "not a certificate").unwrap();
    let cfg = cluster(
        "https://localhost:1",
        Some(VALID),
        SslVerify::CaBundle(bogus.path().into()),
    );
    let err = dcos_token_proxy::Proxy::bind(&test_settings(), &cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&bogus.path().display().to_string()), "{err}");
    assert!(err.contains("dcos_ca.crt"), "{err}");

    let missing = std::path::PathBuf::from("/nonexistent/dcos_ca.crt");
    let cfg = cluster(
        "https://localhost:1",
        Some(VALID),
        SslVerify::CaBundle(missing),
    );
    let err = dcos_token_proxy::Proxy::bind(&test_settings(), &cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/dcos_ca.crt"), "{err}");
}
