//! sample-app-frontend: `/sample-app-frontend` (an index page), `/health`, `/greeting`,
//! `/service` (the backend's greeting, through the internal load balancer over HTTPS
//! verified against veeps' CA) and `/service/db` (the backend's database answer).
//!
//! Environment: `VEEPS_VPC_NAME`, `PORT`, `BACKEND_URL` (like `https://10.2.16.5:443`),
//! `VEEPS_CA_PEM`.

use hyper::StatusCode;
use sample_apps::{config, env, serve, text};
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "/sample-app-frontend";

fn call(agent: &ureq::Agent, base: &str, path: &str) -> (StatusCode, String) {
    match agent
        .get(&format!("{base}/sample-app-backend{path}"))
        .call()
    {
        Ok(r) => (StatusCode::OK, r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            r.into_string().unwrap_or_default(),
        ),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("backend: {e}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cfg = config(&std::env::var("VEEPS_VPC_NAME").unwrap_or_default());
    let setup = || -> Result<(ureq::Agent, String), String> {
        let agent = ureq::AgentBuilder::new()
            .tls_config(sample_apps::tls_client()?)
            .timeout(Duration::from_secs(10))
            .build();
        Ok((agent, env("BACKEND_URL")?.trim_end_matches('/').to_string()))
    };
    let (agent, backend) = match setup() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let (agent, backend, greeting) = (Arc::new(agent), Arc::new(backend), Arc::new(cfg.greeting));
    let r = serve(move |path: String| {
        let (agent, backend, greeting) = (agent.clone(), backend.clone(), greeting.clone());
        async move {
            let rest = path.strip_prefix(PREFIX).map(|r| r.trim_end_matches('/'));
            match rest {
                Some("") => text(
                    StatusCode::OK,
                    "sample-app-frontend: try /health, /greeting, /service, /service/db\n",
                ),
                Some("/health") => text(StatusCode::OK, "OK"),
                Some("/greeting") => text(StatusCode::OK, greeting.as_str()),
                Some(p @ ("/service" | "/service/db")) => {
                    let path = if p == "/service" { "/greeting" } else { "/db" };
                    let (code, body) =
                        tokio::task::spawn_blocking(move || call(&agent, &backend, path))
                            .await
                            .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, String::new()));
                    text(code, body)
                }
                _ => {
                    eprintln!("not found: {path}");
                    text(StatusCode::NOT_FOUND, "not found")
                }
            }
        }
    })
    .await;
    if let Err(e) = r {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
