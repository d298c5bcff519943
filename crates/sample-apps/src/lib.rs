//! What the two sample apps share: their configuration per environment (chosen by the VPC
//! name veeps gives every instance), TLS trusting veeps' CA, and a tiny HTTP server.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::future::Future;
use std::sync::Arc;

/// Settings that differ per environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What `/greeting` answers.
    pub greeting: String,
    /// How many database connection attempts at boot.
    pub db_tries: u32,
    /// Seconds between them.
    pub db_wait_secs: u64,
}

/// The configuration of the environment whose VPC is named `vpc`.
pub fn config(vpc: &str) -> Config {
    let greeting = match vpc {
        "prod" => "Hello from prod",
        "stage" => "Hello from stage",
        "mgmt" => "Hello from mgmt",
        _ => "Hello",
    };
    Config {
        greeting: greeting.to_string(),
        db_tries: 10,
        db_wait_secs: 5,
    }
}

/// An environment variable, or a message naming it.
pub fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// A TLS client configuration trusting only veeps' CA (PEM in `VEEPS_CA_PEM`).
pub fn tls_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = env("VEEPS_CA_PEM")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("VEEPS_CA_PEM: {e}"))?)
            .map_err(|e| format!("VEEPS_CA_PEM: {e}"))?;
    }
    if roots.is_empty() {
        return Err("VEEPS_CA_PEM holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves `handle` over HTTP/1.1 on `0.0.0.0:$PORT` (8080 by default) until killed.
pub async fn serve<F, Fut>(handle: F) -> Result<(), String>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send,
{
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let l = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    eprintln!("listening on port {port}");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(req.uri().path().to_string()).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_follows_the_vpc_name() {
        assert_eq!(config("stage").greeting, "Hello from stage");
        assert_eq!(config("prod").greeting, "Hello from prod");
        assert_eq!(config("other").db_tries, 10);
    }
}
