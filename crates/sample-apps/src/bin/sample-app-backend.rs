//! sample-app-backend: `/sample-app-backend/health`, `/greeting`, and `/db` (the answer of
//! `SELECT 1 + 1` from the database, over TLS verified against veeps' CA). It runs its
//! schema migration at boot, waiting for the database (10 tries, 5 s apart).
//!
//! Environment: `VEEPS_VPC_NAME`, `PORT`, `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`,
//! `DB_PASSWORD`, `VEEPS_CA_PEM`.

use hyper::StatusCode;
use sample_apps::{config, env, serve, text};
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "/sample-app-backend";

fn db_config() -> Result<tokio_postgres::Config, String> {
    let mut c = tokio_postgres::Config::new();
    c.host(&env("DB_HOST")?)
        .port(
            std::env::var("DB_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
        )
        .dbname(&env("DB_NAME")?)
        .user(&env("DB_USER")?)
        .password(env("DB_PASSWORD")?)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(5));
    Ok(c)
}

async fn connect() -> Result<tokio_postgres::Client, String> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*sample_apps::tls_client()?).clone());
    let (client, conn) = db_config()?
        .connect(tls)
        .await
        .map_err(|e| format!("database: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("database connection ended: {e}");
        }
    });
    Ok(client)
}

async fn migrate(tries: u32, wait: Duration) -> Result<(), String> {
    let mut last = String::new();
    for i in 1..=tries {
        match connect().await {
            Ok(c) => {
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS visits (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(|e| format!("migration: {e}"))?;
                eprintln!("migration done (attempt {i})");
                return Ok(());
            }
            Err(e) => {
                eprintln!("database not ready (attempt {i} of {tries}): {e}");
                last = e;
                tokio::time::sleep(wait).await;
            }
        }
    }
    Err(format!("the database stayed unreachable: {last}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cfg = config(&std::env::var("VEEPS_VPC_NAME").unwrap_or_default());
    if let Err(e) = migrate(cfg.db_tries, Duration::from_secs(cfg.db_wait_secs)).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let greeting = Arc::new(cfg.greeting);
    let r = serve(move |path: String| {
        let greeting = greeting.clone();
        async move {
            match path.strip_prefix(PREFIX).unwrap_or("-") {
                "/health" => text(StatusCode::OK, "OK"),
                "/greeting" => text(StatusCode::OK, greeting.as_str()),
                "/db" => match async {
                    let c = connect().await?;
                    let row = c
                        .query_one("SELECT 1 + 1", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<i32, String>(row.get(0))
                }
                .await
                {
                    Ok(n) => text(StatusCode::OK, n.to_string()),
                    Err(e) => text(StatusCode::BAD_GATEWAY, format!("database: {e}")),
                },
                _ => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
    })
    .await;
    if let Err(e) = r {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
