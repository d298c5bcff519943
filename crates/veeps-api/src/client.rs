//! A blocking client of the API, for the CLI.

use crate::ApiError;
use std::io::BufRead;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach the veeps server at {url}: {err}\nStart it with `veeps server` (or `veeps up`), or point --server / VEEPS_ADDR at it.")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        err: String,
    },
    /// The server answered with an error.
    #[error("{}", .body.text.clone().unwrap_or_else(|| .body.error.clone()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: ApiError,
    },
    /// The answer could not be read.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// A client.
pub struct Client {
    base: String,
    token: String,
    caller: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `base` (like `http://127.0.0.1:7480`).
    pub fn new(base: &str, token: &str, caller: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(5))
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            caller: caller.to_string(),
            agent,
        }
    }

    /// A client of an `https://` server whose certificate veeps' CA (`ca_pem`) issued.
    pub fn with_ca(base: &str, token: &str, caller: &str, ca_pem: &str) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no certificate in the CA file".into());
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(5))
            .tls_config(std::sync::Arc::new(tls))
            .build();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            caller: caller.to_string(),
            agent,
        })
    }

    fn req(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("authorization", &format!("Bearer {}", self.token))
            .set("x-veeps-caller", &self.caller)
    }

    fn handle(
        &self,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let body = serde_json::from_str::<ApiError>(&text).unwrap_or(ApiError {
                    error: format!("HTTP {status}: {text}"),
                    text: None,
                    diagnostics: vec![],
                });
                Err(ClientError::Api { status, body })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Connect {
                url: self.base.clone(),
                err: t.to_string(),
            }),
        }
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let resp = self.handle(self.req("GET", path).call())?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// GET a body of the wire contract (`veeps_wire`).
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.handle(self.req("GET", path).call())?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
    }

    /// POST JSON, reading a body of the wire contract.
    pub fn post_as<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self.handle(self.req("POST", path).send_json(body))?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
    }

    /// POST JSON to a route that answers without a body (204).
    pub fn post_empty<B: serde::Serialize>(&self, path: &str, body: &B) -> Result<(), ClientError> {
        self.handle(self.req("POST", path).send_json(body))
            .map(|_| ())
    }

    /// DELETE on a route that answers without a body (204).
    pub fn delete_empty(&self, path: &str) -> Result<(), ClientError> {
        self.handle(self.req("DELETE", path).call()).map(|_| ())
    }

    /// GET, returning text.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.handle(self.req("GET", path).call())?;
        resp.into_string()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// DELETE, reading the answer as `T`.
    pub fn delete_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.handle(self.req("DELETE", path).call())?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// DELETE, returning a JSON document.
    pub fn delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let resp = self.handle(self.req("DELETE", path).call())?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// POST JSON, returning a JSON document.
    pub fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<serde_json::Value, ClientError> {
        let resp = self.handle(self.req("POST", path).send_json(body))?;
        resp.into_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// GET a stream of JSON lines, calling `each` for every line, until the server ends it.
    pub fn get_stream(
        &self,
        path: &str,
        mut each: impl FnMut(serde_json::Value),
    ) -> Result<(), ClientError> {
        let resp = self.handle(
            self.req("GET", path)
                .timeout(std::time::Duration::from_secs(365 * 24 * 3600))
                .call(),
        )?;
        let reader = std::io::BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            each(serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?);
        }
        Ok(())
    }

    /// POST JSON and read a stream of JSON lines, calling `each` for every line.
    pub fn post_stream<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        mut each: impl FnMut(serde_json::Value),
    ) -> Result<(), ClientError> {
        let resp = self.handle(
            self.req("POST", path)
                .timeout(std::time::Duration::from_secs(24 * 3600))
                .send_json(body),
        )?;
        let reader = std::io::BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            each(serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?);
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
