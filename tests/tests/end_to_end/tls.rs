//! TLS and mutual TLS on the gRPC port, with certificates made here (rcgen).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tact_core::{Channel, Purpose};
use tact_proto::pb;
use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tact_server::TlsOptions;
use tact_tests::{TestServer, opted_in, request, wed_10am};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn leaf(cn: &str, names: Vec<String>, ca: &CertifiedIssuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "tact test ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: leaf("tact", vec!["localhost".into()], &ca),
        client: leaf("dialer", vec!["dialer.example".into()], &ca),
    }
}

fn tls_options(dir: &Path, pki: &Pki, mtls: bool) -> TlsOptions {
    std::fs::write(dir.join("server.crt"), &pki.server.0).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server.1).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    TlsOptions {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_ca: mtls.then(|| dir.join("ca.crt")),
    }
}

async fn tls_client(
    server: &TestServer,
    pki: &Pki,
    identity: Option<&(String, String)>,
) -> Result<ContactPolicyClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{}", server.handle.local_addr()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ContactPolicyClient::new(channel))
}

async fn decide(
    client: Result<ContactPolicyClient<tonic::transport::Channel>, tonic::transport::Error>,
) -> bool {
    match client {
        Ok(mut c) => c
            .decide(request("c1", Channel::Email, Purpose::Marketing))
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_tls_server_answers_a_tls_client_and_refuses_a_plaintext_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let tls = tls_options(dir.path(), &pki, false);
    let server = TestServer::start_with(None, wed_10am(), move |opts| opts.tls = Some(tls)).await;
    assert!(
        decide(tls_client(&server, &pki, None).await).await,
        "a TLS client is answered"
    );
    let plain = ContactPolicyClient::connect(format!("http://{}", server.handle.local_addr())).await;
    assert!(!decide(plain).await, "a plaintext client is refused");
    server.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_a_client_without_a_certificate_is_refused_and_one_with_is_named_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let tls = tls_options(dir.path(), &pki, true);
    let server = TestServer::start_with(None, wed_10am(), move |opts| opts.tls = Some(tls)).await;
    assert!(
        !decide(tls_client(&server, &pki, None).await).await,
        "no client certificate"
    );
    let mut client = tls_client(&server, &pki, Some(&pki.client)).await.unwrap();
    client
        .record_events(pb::RecordEventsRequest {
            events: opted_in("c1", wed_10am()),
        })
        .await
        .unwrap();
    let mut req = request("c1", Channel::Call, Purpose::Sales);
    req.requested_by = "rep anna".into();
    client.authorize(req).await.unwrap();
    let authorized = server
        .handle
        .engine()
        .log()
        .storage()
        .customer_events("c1")
        .unwrap()
        .into_iter()
        .find_map(|(_, e)| match e.kind {
            tact_core::EventKind::OutreachAuthorized { requested_by, .. } => Some(requested_by),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        authorized, "dialer/rep anna",
        "the certificate's CN is the client id"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_file_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.crt"), "not pem").unwrap();
    let mut opts = tact_server::ServerOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        None,
        tact_core::Policy::default_policy(),
    );
    opts.tls = Some(TlsOptions {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        client_ca: None,
    });
    let e = tact_server::run(opts, std::future::pending()).await.unwrap_err();
    assert!(e.to_string().contains("server.crt"), "{e}");
}

#[tokio::test]
async fn the_handshake_deadline_covers_the_tls_handshake() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let tls = tls_options(dir.path(), &pki, false);
    let server = TestServer::start_with(None, wed_10am(), move |opts| {
        opts.tls = Some(tls);
        opts.transport.handshake_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    // Connects and never starts the TLS handshake: closed at the deadline.
    let mut silent = tokio::net::TcpStream::connect(server.handle.local_addr())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed before 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    server.stop().await;
}
