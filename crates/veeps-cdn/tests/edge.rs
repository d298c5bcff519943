//! The edge against a real origin on loopback, asked over HTTP as a client would.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veeps_cdn::cache::{Bounds, Cache};
use veeps_cdn::edge::Edge;
use veeps_cdn::model::{Behavior, CustomError, Distribution, Origin, PlaneConfig};
use veeps_cdn::policy::Ttls;

/// A page of the origin: status, headers, body.
type Page = (u16, Vec<(String, String)>, Vec<u8>);

/// An origin whose answers the test sets, counting what it is asked.
#[derive(Default)]
struct Origin_ {
    pages: Mutex<HashMap<String, Page>>,
    asked: Mutex<Vec<(String, Option<String>)>>,
    down: AtomicBool,
    /// While true, answers wait until it is false again.
    held: tokio::sync::watch::Sender<bool>,
}

impl Origin_ {
    fn page(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.pages.lock().unwrap().insert(
            path.into(),
            (
                status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body.to_vec(),
            ),
        );
    }

    fn asked(&self, path: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let inm = req
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_string());
        self.asked.lock().unwrap().push((path.clone(), inm.clone()));
        let _ = self.held.subscribe().wait_for(|held| !held).await;
        let mut r = Response::new(Full::new(Bytes::new()));
        if self.down.load(Ordering::SeqCst) {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        let Some((status, headers, body)) = self.pages.lock().unwrap().get(&path).cloned() else {
            *r.status_mut() = StatusCode::NOT_FOUND;
            *r.body_mut() = Full::new(Bytes::from_static(b"origin's own 404"));
            return r;
        };
        for (k, v) in &headers {
            r.headers_mut().insert(
                hyper::header::HeaderName::try_from(k.as_str()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let etag = headers
            .iter()
            .find(|(k, _)| k == "etag")
            .map(|(_, v)| v.clone());
        if inm.is_some() && inm == etag {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        *r.body_mut() = Full::new(Bytes::from(body));
        r
    }
}

async fn start_origin() -> (Arc<Origin_>, SocketAddr) {
    let o = Arc::new(Origin_::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let me = o.clone();
    tokio::spawn(veeps_http::serve(
        l,
        "origin",
        Default::default(),
        move |_| {
            let me = me.clone();
            hyper::service::service_fn(move |req| {
                let me = me.clone();
                async move { Ok::<_, Infallible>(me.answer(req).await) }
            })
        },
    ));
    (o, at)
}

async fn start_edge(cache: Cache, cfg: &PlaneConfig) -> (Arc<Edge>, SocketAddr) {
    let edge = Edge::new(cache);
    edge.load(cfg);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let e = edge.clone();
    tokio::spawn(veeps_http::serve(
        l,
        "cdn",
        Default::default(),
        move |peer| {
            let e = e.clone();
            hyper::service::service_fn(move |req| {
                let e = e.clone();
                async move { Ok::<_, Infallible>(e.handle(req, false, peer).await) }
            })
        },
    ));
    (edge, at)
}

fn config(origin: SocketAddr, ttls: Ttls) -> PlaneConfig {
    let behavior = |pattern: &str, compress: bool| Behavior {
        pattern: pattern.into(),
        origin: "site".into(),
        ttls,
        allowed_methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
        cached_methods: vec!["GET".into(), "HEAD".into()],
        query_string: false,
        headers: vec![],
        cookies: vec![],
        compress,
    };
    PlaneConfig {
        http: None,
        https: None,
        bounds: None,
        origin_ca: None,
        distributions: vec![Distribution {
            id: "E1TEST".into(),
            env: "test".into(),
            domain: "e1test.cdn.localhost".into(),
            aliases: vec!["static.example.test".into()],
            enabled: true,
            default_root_object: Some("index.html".into()),
            redirect_to_https: false,
            origins: vec![Origin {
                id: "site".into(),
                addr: origin,
                host: "site.s3-website.localhost".into(),
                path: String::new(),
                https: false,
            }],
            behaviors: vec![behavior("/raw/*", false), behavior("*", true)],
            custom_errors: vec![CustomError {
                error_code: 404,
                response_code: Some(404),
                response_page_path: Some("/error.html".into()),
                error_caching_min_ttl: 10,
            }],
            tls: None,
        }],
    }
}

struct Got {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Got {
    fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn get(at: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let stream = tokio::net::TcpStream::connect(at).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "static.example.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_caches_revalidates_collapses_and_serves_stale() {
    let (origin, oat) = start_origin().await;
    let page = "<html>".to_string() + &"hello edge ".repeat(300) + "</html>";
    origin.page(
        "/index.html",
        200,
        &[
            ("content-type", "text/html"),
            ("etag", "\"v1\""),
            ("cache-control", "max-age=3600"),
        ],
        page.as_bytes(),
    );
    origin.page(
        "/error.html",
        200,
        &[("content-type", "text/html")],
        b"custom error page",
    );
    let dir = tempfile::tempdir().unwrap();
    let bounds = Bounds {
        memory: 64 << 20,
        disk: 256 << 20,
    };
    // max_ttl 1 caps the origin's max-age=3600.
    let cfg = config(
        oat,
        Ttls {
            min: 0,
            default: 1,
            max: 1,
        },
    );
    let (edge, at) = start_edge(Cache::open(Some(dir.path()), bounds).unwrap(), &cfg).await;

    // A miss, then hits (the default root object answers "/").
    let first = get(at, "/", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.h("x-cache"), "Miss from veeps");
    assert_eq!(first.body, page.as_bytes());
    let again = get(at, "/index.html", &[]).await;
    assert_eq!(again.h("x-cache"), "Hit from veeps");
    assert_eq!(origin.asked("/index.html"), 1);

    // Validators: the client's matching ETag gets a 304 from the edge.
    let not_modified = get(at, "/index.html", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());

    // A range from the cached whole object, without asking the origin.
    let part = get(at, "/index.html", &[("range", "bytes=0-5")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], b"<html>");
    assert_eq!(part.h("content-range"), format!("bytes 0-5/{}", page.len()));
    assert_eq!(origin.asked("/index.html"), 1);

    // Compression as the client accepts it, none for one that accepts none.
    let br = get(at, "/index.html", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(br.h("content-encoding"), "br");
    let mut plain = vec![];
    brotli::BrotliDecompress(&mut &br.body[..], &mut plain).unwrap();
    assert_eq!(plain, page.as_bytes());
    assert!(br.body.len() < page.len() / 4);
    let gz = get(at, "/index.html", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.h("content-encoding"), "gzip");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, page);
    assert_eq!(get(at, "/index.html", &[]).await.h("content-encoding"), "");
    // What Chromium sends: brotli is its first choice the edge makes.
    let chromium = get(
        at,
        "/index.html",
        &[
            (
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            ),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-US,en;q=0.9"),
            ("cache-control", "max-age=0"),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
    assert_eq!(chromium.status, 200);
    assert_eq!(chromium.h("content-encoding"), "br");
    assert_eq!(chromium.h("vary"), "Accept-Encoding");
    assert_eq!(origin.asked("/index.html"), 1);

    // Past max_ttl: revalidated with the stored ETag, the origin's 304 refreshes it.
    wait_until("the object to go stale and be revalidated", || async {
        get(at, "/index.html", &[]).await.h("x-cache") == "RefreshHit from veeps"
    })
    .await;
    {
        let asked = origin.asked.lock().unwrap();
        let last = asked
            .iter()
            .rev()
            .find(|(p, _)| p == "/index.html")
            .unwrap();
        assert_eq!(last.1.as_deref(), Some("\"v1\""), "a conditional request");
    }

    // The origin down: the stale object is served rather than an error.
    origin.down.store(true, Ordering::SeqCst);
    wait_until("a stale answer while the origin is down", || async {
        let g = get(at, "/index.html", &[]).await;
        assert_eq!(g.status, 200);
        g.h("x-cache") == "Stale from veeps"
    })
    .await;
    origin.down.store(false, Ordering::SeqCst);

    // The origin's 404 becomes the distribution's error page.
    let missing = get(at, "/nothing-here", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(&missing.body[..], b"custom error page");

    // 100 clients missing one key at once: one origin request.
    origin.page(
        "/big.txt",
        200,
        &[("content-type", "text/plain")],
        &[b'z'; 5000],
    );
    // The origin holds its answer until all 100 are waiting at the edge.
    origin.held.send_replace(true);
    let misses = || {
        edge.stats
            .snapshot()
            .into_iter()
            .find(|(k, _)| *k == "cdn_misses_total")
            .map(|(_, v)| v)
            .unwrap_or(0)
    };
    let before = misses();
    let all: Vec<_> = (0..100)
        .map(|_| tokio::spawn(get(at, "/big.txt", &[])))
        .collect();
    wait_until("100 clients waiting on one miss", || async {
        misses() >= before + 100
    })
    .await;
    origin.held.send_replace(false);
    for t in all {
        let g = t.await.unwrap();
        assert_eq!(g.status, 200);
        assert_eq!(g.body.len(), 5000);
    }
    assert_eq!(
        origin.asked("/big.txt"),
        1,
        "collapsed into one origin request"
    );

    // Invalidation: the next request asks the origin again.
    assert_eq!(edge.cache.invalidate("E1TEST", &["/big*".into()]), 1);
    assert_eq!(
        get(at, "/big.txt", &[]).await.h("x-cache"),
        "Miss from veeps"
    );
    assert_eq!(origin.asked("/big.txt"), 2);

    // Another name is not this distribution's.
    let stream = tokio::net::TcpStream::connect(at).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let r = send
        .send_request(
            Request::get("/")
                .header("host", "other.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let stats: HashMap<_, _> = edge.stats.snapshot().into_iter().collect();
    assert!(stats["cdn_hits_total"] >= 5, "{stats:?}");
    assert!(stats["cdn_bytes_from_cache_total"] > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_survives_a_restart() {
    let (origin, oat) = start_origin().await;
    origin.page(
        "/app.js",
        200,
        &[
            ("content-type", "application/javascript"),
            ("cache-control", "max-age=60"),
        ],
        b"console.log('hi')",
    );
    let dir = tempfile::tempdir().unwrap();
    let bounds = Bounds {
        memory: 1 << 20,
        disk: 1 << 20,
    };
    let cfg = config(
        oat,
        Ttls {
            min: 0,
            default: 30,
            max: 600,
        },
    );
    {
        let (_edge, at) = start_edge(Cache::open(Some(dir.path()), bounds).unwrap(), &cfg).await;
        assert_eq!(
            get(at, "/app.js", &[]).await.h("x-cache"),
            "Miss from veeps"
        );
    }
    // A new edge over the same directory: a hit, no origin request.
    let (_edge, at) = start_edge(Cache::open(Some(dir.path()), bounds).unwrap(), &cfg).await;
    let g = get(at, "/app.js", &[]).await;
    assert_eq!(g.h("x-cache"), "Hit from veeps");
    assert_eq!(&g.body[..], b"console.log('hi')");
    assert_eq!(origin.asked("/app.js"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plane_serves_each_name_over_https_with_its_own_certificate() {
    let (origin, oat) = start_origin().await;
    origin.page(
        "/index.html",
        200,
        &[("content-type", "text/html")],
        b"over tls",
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["static.example.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut cfg = config(
        oat,
        Ttls {
            min: 0,
            default: 30,
            max: 60,
        },
    );
    cfg.distributions[0].tls = Some((cert.pem(), key.serialize_pem()));
    cfg.distributions[0].redirect_to_https = true;
    cfg.http = Some("127.0.0.1:0".parse().unwrap());
    cfg.https = Some("127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let plane = veeps_cdn::plane::Plane::new(dir.path()).unwrap();
    let applied = plane.apply(&cfg).await;
    assert!(applied.failures.is_empty(), "{:?}", applied.failures);
    // Plain HTTP is sent to HTTPS.
    let plain = get(applied.http.unwrap(), "/x?y=1", &[]).await;
    assert_eq!(plain.status, 301);
    assert_eq!(plain.h("location"), "https://static.example.test/x?y=1");
    // HTTPS, the certificate chosen by the name asked for.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(applied.https.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("static.example.test").unwrap();
    let stream = conn.connect(name, tcp).await.unwrap();
    let (mut send, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(c);
    let r = send
        .send_request(
            Request::get("/")
                .header("host", "static.example.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        &r.into_body().collect().await.unwrap().to_bytes()[..],
        b"over tls"
    );
    // A name with no certificate gets no handshake.
    let tcp = tokio::net::TcpStream::connect(applied.https.unwrap())
        .await
        .unwrap();
    let other = rustls::pki_types::ServerName::try_from("other.test").unwrap();
    assert!(conn.connect(other, tcp).await.is_err());
    assert_eq!(plane.stats()["cdn_cached_objects"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_over_https_is_verified_against_the_trusted_ca() {
    let (origin, _) = start_origin().await;
    origin.page(
        "/secure.txt",
        200,
        &[("content-type", "text/plain")],
        b"from a TLS origin",
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = veeps_http::tls_config(&cert.pem(), &key.serialize_pem()).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let me = origin.clone();
    tokio::spawn(veeps_http::serve_tls(
        l,
        "origin-tls",
        Default::default(),
        tls,
        move |_| {
            let me = me.clone();
            hyper::service::service_fn(move |req| {
                let me = me.clone();
                async move { Ok::<_, Infallible>(me.answer(req).await) }
            })
        },
    ));
    let mut cfg = config(
        "127.0.0.1:1".parse().unwrap(),
        Ttls {
            min: 0,
            default: 30,
            max: 60,
        },
    );
    cfg.distributions[0].origins[0].https = true;
    cfg.distributions[0].origins[0].host = format!("localhost:{port}");
    // Not trusted yet: the edge refuses the origin's certificate.
    let (edge, at) = start_edge(
        Cache::open(
            None,
            Bounds {
                memory: 1 << 20,
                disk: 0,
            },
        )
        .unwrap(),
        &cfg,
    )
    .await;
    let g = get(at, "/secure.txt", &[]).await;
    assert_eq!(g.status, 502);
    assert!(
        String::from_utf8_lossy(&g.body).contains("certificate"),
        "{:?}",
        g.body
    );
    // Trusted: served, and cached.
    cfg.origin_ca = Some(cert.pem());
    edge.load(&cfg);
    let g = get(at, "/secure.txt", &[]).await;
    assert_eq!((g.status, &g.body[..]), (200, &b"from a TLS origin"[..]));
    assert_eq!(
        get(at, "/secure.txt", &[]).await.h("x-cache"),
        "Hit from veeps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_protocol_errors_and_reach_no_origin() {
    let (origin, oat) = start_origin().await;
    let cfg = config(
        oat,
        Ttls {
            min: 0,
            default: 30,
            max: 60,
        },
    );
    let (_edge, at) = start_edge(
        Cache::open(
            None,
            Bounds {
                memory: 1 << 20,
                disk: 0,
            },
        )
        .unwrap(),
        &cfg,
    )
    .await;
    let send = |method: &str, body: Vec<u8>| {
        let method = method.to_string();
        async move {
            let stream = tokio::net::TcpStream::connect(at).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method.as_str())
                .uri("/upload")
                .header("host", "static.example.test")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            send.send_request(req).await.map(|r| r.status().as_u16())
        }
    };
    // A method the distribution does not allow: refused at the edge.
    assert_eq!(send("POST", b"x".to_vec()).await.unwrap(), 403);
    // A body over the limit on a method passed to the origin: 413, the origin never asked.
    let status = send("OPTIONS", vec![b'a'; veeps_cdn::edge::MAX_REQUEST_BODY + 1]).await;
    assert!(matches!(status, Ok(413)) || status.is_err(), "{status:?}");
    assert_eq!(origin.asked("/upload"), 0);
}
