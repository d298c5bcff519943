//! Health checks, as Route 53's: a probe every interval from outside (the host), HTTP and
//! HTTPS healthy on a 2xx or 3xx status within the time limit (HTTPS without checking the
//! certificate, as Route 53 does not), TCP on a connection; the status flips after
//! `failure_threshold` consecutive results the other way. A new check starts healthy.

use crate::model::CheckSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// A check's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Whether it passes.
    pub healthy: bool,
    /// Consecutive probes that disagreed with `healthy` so far.
    pub against: u32,
    /// What the last probe found.
    pub last: String,
    /// When the last probe ended (RFC 3339).
    pub checked_at: String,
}

struct Check {
    spec: CheckSpec,
    status: Status,
    due: Instant,
    probing: bool,
}

/// Every check of the server.
#[derive(Default)]
pub struct Health {
    checks: Mutex<HashMap<String, Check>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Health {
    /// Adds or changes a check (a changed one keeps its status).
    pub fn put(&self, spec: CheckSpec) {
        let mut m = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&spec.id) {
            Some(c) => c.spec = spec,
            None => {
                m.insert(
                    spec.id.clone(),
                    Check {
                        spec,
                        status: Status {
                            healthy: true,
                            against: 0,
                            last: "not probed yet".into(),
                            checked_at: String::new(),
                        },
                        due: Instant::now(),
                        probing: false,
                    },
                );
            }
        }
    }

    /// Probes exactly `specs` from now on (statuses of those kept stay).
    pub fn sync(&self, specs: &[CheckSpec]) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| specs.iter().any(|s| &s.id == id));
        for s in specs {
            self.put(s.clone());
        }
    }

    /// Takes over what another process found (a plane replacing an older one): a check's
    /// status is not reset to healthy by an upgrade.
    pub fn seed(&self, statuses: &[(String, Status)]) {
        let mut m = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        for (id, st) in statuses {
            if let Some(c) = m.get_mut(id) {
                c.status = st.clone();
            }
        }
    }

    /// Forgets a check.
    pub fn delete(&self, id: &str) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether a check passes (an unknown one does).
    pub fn healthy(&self, id: &str) -> bool {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_none_or(|c| c.status.healthy)
    }

    /// Every check with its status.
    pub fn list(&self) -> Vec<(CheckSpec, Status)> {
        let mut v: Vec<(CheckSpec, Status)> = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| (c.spec.clone(), c.status.clone()))
            .collect();
        v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        v
    }

    /// Probes each check when it is due, one probe at a time per check.
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(250));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                let now = Instant::now();
                let due: Vec<CheckSpec> = {
                    let mut m = me.checks.lock().unwrap_or_else(|p| p.into_inner());
                    m.values_mut()
                        .filter(|c| !c.probing && c.due <= now)
                        .map(|c| {
                            c.probing = true;
                            c.due = now + Duration::from_secs(c.spec.interval_secs.max(1));
                            c.spec.clone()
                        })
                        .collect()
                };
                for spec in due {
                    let me = me.clone();
                    tokio::spawn(async move {
                        let result = probe(&spec).await;
                        me.record(&spec.id, result);
                    });
                }
            }
        });
        if let Some(old) = self
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// Stops probing.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    fn record(&self, id: &str, result: Result<String, String>) {
        let mut m = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = m.get_mut(id) else { return };
        c.probing = false;
        let ok = result.is_ok();
        c.status.last = match result {
            Ok(s) => s,
            Err(s) => s,
        };
        c.status.checked_at = veeps_state::now();
        if ok == c.status.healthy {
            c.status.against = 0;
            return;
        }
        c.status.against += 1;
        if c.status.against >= c.spec.failure_threshold.max(1) {
            c.status.healthy = ok;
            c.status.against = 0;
            tracing::info!(check = %id, healthy = ok, last = %c.status.last, "health check changed");
        }
    }
}

/// One probe: `Ok` with what passed, `Err` with what failed.
pub async fn probe(c: &CheckSpec) -> Result<String, String> {
    let target = (c.host.as_str(), c.port);
    let run = async {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", c.host, c.port))?;
        match c.kind.as_str() {
            "TCP" => Ok("connected".to_string()),
            "HTTPS" => {
                let tls = tokio_rustls::TlsConnector::from(Arc::new(no_verify()));
                let name = rustls::pki_types::ServerName::try_from(c.host.clone())
                    .map_err(|e| format!("{}: {e}", c.host))?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}:{}: {e}", c.host, c.port))?;
                http_status(s, c).await
            }
            _ => http_status(tcp, c).await,
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn http_status<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    c: &CheckSpec,
) -> Result<String, String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: veeps-health-check\r\nConnection: close\r\n\r\n",
        c.path, c.host
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        let r = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let line = line.lines().next().unwrap_or("");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// A client configuration that takes any certificate, as Route 53's checkers do.
fn no_verify() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
