//! The control plane's side of a balancer data plane's control socket (and a new plane's,
//! taking over from the old one).

use crate::plane::Request;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// Why a request to a data plane failed.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// It could not be reached or did not answer in time.
    #[error("the balancer's data plane does not answer: {0}")]
    Unreachable(String),
    /// It answered something else than expected.
    #[error("the balancer's data plane answered badly: {0}")]
    Protocol(String),
}

fn unreachable(e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unreachable(e.to_string())
}

/// Sends `req` and reads the reply, within `within`.
pub async fn request<T: serde::de::DeserializeOwned>(
    sock: &Path,
    req: &Request,
    within: Duration,
) -> Result<T, PlaneError> {
    let line = serde_json::to_string(req).map_err(|e| PlaneError::Protocol(e.to_string()))?;
    let reply = veeps_sys::plane::ask(sock, &line, within)
        .await
        .map_err(unreachable)?;
    serde_json::from_str(&reply).map_err(|e| PlaneError::Protocol(e.to_string()))
}

/// The same, blocking (for callers outside the runtime, like metric collection).
pub fn request_blocking<T: serde::de::DeserializeOwned>(
    sock: &Path,
    req: &Request,
    within: Duration,
) -> Result<T, PlaneError> {
    let line = serde_json::to_string(req).map_err(|e| PlaneError::Protocol(e.to_string()))?;
    let reply = veeps_sys::plane::ask_blocking(sock, &line, within).map_err(unreachable)?;
    serde_json::from_str(&reply).map_err(|e| PlaneError::Protocol(e.to_string()))
}

/// Asks the running plane for its listening sockets; it stops accepting on them and
/// finishes its connections.
pub async fn handoff(sock: &Path) -> Result<Vec<(SocketAddr, OwnedFd)>, PlaneError> {
    let sock = sock.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let s = std::os::unix::net::UnixStream::connect(&sock).map_err(unreachable)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(unreachable)?;
        let mut line = serde_json::to_string(&Request::Handoff)
            .map_err(|e| PlaneError::Protocol(e.to_string()))?;
        line.push('\n');
        (&s).write_all(line.as_bytes()).map_err(unreachable)?;
        let mut text = vec![];
        let mut fds = vec![];
        // The descriptors come with the first bytes; read up to the newline.
        while !text.ends_with(b"\n") {
            let (b, f) = veeps_sys::fdpass::recv(&s, 64 * 1024).map_err(unreachable)?;
            if b.is_empty() {
                break;
            }
            text.extend(b);
            fds.extend(f);
        }
        let addrs: Vec<SocketAddr> =
            serde_json::from_slice(&text).map_err(|e| PlaneError::Protocol(e.to_string()))?;
        if addrs.len() != fds.len() {
            return Err(PlaneError::Protocol(format!(
                "{} addresses and {} sockets",
                addrs.len(),
                fds.len()
            )));
        }
        Ok(addrs.into_iter().zip(fds).collect())
    })
    .await
    .map_err(unreachable)?
}
