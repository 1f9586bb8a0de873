//! A local HTTPS server with a self-signed certificate made for the test
//! (rcgen), on tokio-rustls with the ring provider. It records how each TLS
//! handshake ended, so a test can tell that a client really attempted one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// An HTTPS server answering every request with `body` as an RSS feed.
pub struct TlsServer {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Result<(), String>>>>,
    task: JoinHandle<()>,
}

impl TlsServer {
    pub async fn start(body: String) -> TlsServer {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("self-signed certificate");
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, body) = (acceptor.clone(), seen.clone(), body.clone());
                connections.spawn(async move {
                    match acceptor.accept(stream).await {
                        Err(e) => seen.lock().unwrap().push(Err(e.to_string())),
                        Ok(mut tls) => {
                            seen.lock().unwrap().push(Ok(()));
                            let mut buf = [0u8; 4096];
                            let _ = tls.read(&mut buf).await;
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = tls.write_all(response.as_bytes()).await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        TlsServer {
            addr,
            handshakes,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// How each handshake ended: `Ok` when completed, else the server's error.
    pub fn handshakes(&self) -> Vec<Result<(), String>> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
