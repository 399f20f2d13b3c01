//! Sidecar mode against the fake master: service-account and password logins, the
//! refresher keeping a token alive, and the token file.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dcos_token_proxy::dcos::config::SslVerify;
use dcos_token_proxy::source::credential::{Secret, ServiceAccount, SigningKey};
use dcos_token_proxy::source::login::{Login, LoginCredential, LoginError, default_endpoint};
use dcos_token_proxy::source::refresh::{LoginStats, Refresher, TokenPublisher};
use dcos_token_proxy::source::{Published, Snapshot};
use dcos_token_proxy::upstream::ClientOptions;

const SA: &str = "proxy-sa";

fn account(pem: &str) -> LoginCredential {
    LoginCredential::ServiceAccount(ServiceAccount {
        uid: SA.into(),
        key: SigningKey::from_pem(pem.as_bytes()).unwrap(),
        login_endpoint: None,
    })
}

fn publisher(
    master: &FakeMaster,
) -> (
    Arc<Published>,
    dcos_token_proxy::source::RereadRequests,
    TokenPublisher,
) {
    let (published, rereads) = Published::new(Snapshot::Waiting("logging in".into()));
    let published = Arc::new(published);
    let p = TokenPublisher::new(
        published.clone(),
        &cluster(&master.url, None, SslVerify::System),
        &ClientOptions::default(),
    )
    .unwrap();
    (published, rereads, p)
}

fn login_for(master: &FakeMaster, credential: LoginCredential) -> Login {
    let (_, _, p) = publisher(master);
    Login::new(
        credential,
        default_endpoint(&master.url.parse().unwrap()),
        p.client().clone(),
    )
}

#[tokio::test]
async fn a_service_account_logs_in_with_a_pkcs8_or_pkcs1_key_and_a_stranger_is_refused() {
    let master = FakeMaster::start().await;
    master.enable_login(LoginAccount::service_account(
        SA,
        SA_KEY_PKCS8,
        Duration::from_secs(60),
    ));
    for pem in [SA_KEY_PKCS8, SA_KEY_PKCS1] {
        let token = login_for(&master, account(pem)).login().await.unwrap();
        let claims = token.claims().unwrap();
        assert_eq!(claims.uid.as_deref(), Some(SA));
    }
    assert_eq!(master.successful_logins(), 2);

    let e = login_for(&master, account(OTHER_KEY))
        .login()
        .await
        .unwrap_err();
    assert!(
        matches!(e, LoginError::Rejected { status: 401, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("ERR_INVALID_CREDENTIALS"), "{msg}");
    assert!(msg.contains("/acs/api/v1/auth/login"), "{msg}");
}

#[tokio::test]
async fn a_user_logs_in_with_a_password() {
    let master = FakeMaster::start().await;
    master.enable_login(LoginAccount {
        uid: "alice".into(),
        public_key: None,
        password: Some("hunter2".into()),
        lifetime: Duration::from_secs(60),
        delay: Duration::ZERO,
        refuse: false,
    });
    let good = LoginCredential::Password {
        uid: "alice".into(),
        password: Secret::new("hunter2"),
    };
    assert!(login_for(&master, good).login().await.is_ok());
    let bad = LoginCredential::Password {
        uid: "alice".into(),
        password: Secret::new("wrong"),
    };
    assert!(matches!(
        login_for(&master, bad).login().await,
        Err(LoginError::Rejected { .. })
    ));
}

#[tokio::test]
async fn a_malformed_answer_and_an_unreachable_endpoint_are_named() {
    // The fake master without a login account answers 200 "ok ..." (not JSON).
    let master = FakeMaster::start().await;
    let e = login_for(&master, account(SA_KEY_PKCS8))
        .login()
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::Malformed { .. }), "{e:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_, _, p) = publisher(&master);
    let login = Login::new(
        account(SA_KEY_PKCS8),
        default_endpoint(&url.parse().unwrap()),
        p.client().clone(),
    );
    let e = login.login().await.unwrap_err();
    assert!(matches!(e, LoginError::Unreachable { .. }), "{e:?}");
}

#[tokio::test]
async fn the_refresher_logs_in_again_before_each_short_lived_token_expires() {
    let master = FakeMaster::start().await;
    master.enable_login(LoginAccount::service_account(
        SA,
        SA_KEY_PKCS8,
        Duration::from_secs(3),
    ));
    let (published, rereads, p) = publisher(&master);
    let login = Login::new(
        account(SA_KEY_PKCS8),
        default_endpoint(&master.url.parse().unwrap()),
        p.client().clone(),
    );
    let stats = Arc::new(LoginStats::default());
    let mut changes = published.subscribe();
    let task = tokio::spawn(Refresher::new(login, p, stats.clone()).run(rereads));
    // Three logins: the first, then two refreshes.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .unwrap()
            .unwrap();
    }
    task.abort();
    let logins = master.logins();
    assert!(logins.iter().all(|l| l.ok), "{logins:?}");
    for l in &logins[1..] {
        let exp = l.previous_expiry.expect("a token was held");
        assert!(l.at < exp, "a login came after the token it renews expired");
    }
    assert_eq!(
        stats.logins.load(std::sync::atomic::Ordering::Relaxed),
        logins.len() as u64
    );
}
