//! The CDN end to end: a bucket website behind a `cdn_distribution` with its own name and
//! certificate, asked with curl over HTTP and HTTPS; invalidation from the CLI; the edge
//! serving while the control plane is down.

use veeps_testkit::{curl, wait_until, Veeps};

/// `curl -i` through the edge for `host`: status, headers (lower-cased) and body.
fn edge(v: &Veeps, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--noproxy", "*", "-m", "10", "-H"])
        .arg(format!("Host: {host}"))
        .args(extra)
        .arg(format!("http://127.0.0.1:{}{path}", v.cdn_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn a_bucket_website_behind_the_cdn_with_its_name_certificate_and_invalidation() {
    let mut v = Veeps::start();
    v.write(
        "env/main.hcl",
        r#"
resource "bucket" "static" {
  bucket        = "static-site"
  force_destroy = true
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [
      { Effect = "Allow", Principal = "*", Action = "s3:GetObject", Resource = "arn:aws:s3:::static-site/*" },
      { Effect = "Allow", Principal = "*", Action = "s3:ListBucket", Resource = "arn:aws:s3:::static-site" },
    ]
  })
  website {
    index_document = "index.html"
    error_document = "error.html"
  }
}
resource "bucket_object" "index" {
  bucket        = bucket.static.id
  key           = "index.html"
  content       = "<h1>home</h1>${join("", [for i in range(200) : "<p>cached text</p>"])}"
  content_type  = "text/html"
  cache_control = "max-age=3600"
}
resource "bucket_object" "error" {
  bucket       = bucket.static.id
  key          = "error.html"
  content      = "<h1>not here</h1>"
  content_type = "text/html"
}
resource "certificate" "static" {
  domain_name = "static.cdn.test"
}
resource "cdn_distribution" "static" {
  aliases             = ["static.cdn.test"]
  default_root_object = "index.html"
  certificate_arn     = certificate.static.id
  origin {
    origin_id   = "site"
    domain_name = bucket.static.website_endpoint
  }
  default_cache_behavior {
    target_origin_id       = "site"
    min_ttl                = 0
    default_ttl            = 30
    max_ttl                = 60
    compress               = true
    viewer_protocol_policy = "allow-all"
  }
  custom_error_response {
    error_code         = 404
    response_code      = 404
    response_page_path = "/error.html"
  }
}
output "cdn_domain" {
  value = cdn_distribution.static.domain_name
}
output "cdn_id" {
  value = cdn_distribution.static.id
}
"#,
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let out = v.ok(&["output", "env", "-json"]);
    let outs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let domain = outs["cdn_domain"]["value"].as_str().unwrap().to_string();
    let id = outs["cdn_id"]["value"].as_str().unwrap().to_string();
    assert!(
        domain.ends_with(".cdn.localhost") && id.starts_with('E'),
        "{domain} {id}"
    );

    // By its alias and by its own name: a miss, then a hit.
    wait_until("the edge answers", 30, || {
        edge(&v, "static.cdn.test", "/", &[]).0 == 200
    });
    let (code, head, body) = edge(&v, "static.cdn.test", "/", &[]);
    assert_eq!(code, 200, "{head}");
    assert!(body.starts_with("<h1>home</h1>"), "{body}");
    assert!(head.contains("x-cache: hit from veeps"), "{head}");
    let (code, head, _) = edge(&v, &domain, "/index.html", &[]);
    assert_eq!(code, 200);
    assert!(head.contains("x-cache: hit from veeps"), "{head}");
    // Compressed for a client that accepts it.
    let (_, head, _) = edge(
        &v,
        "static.cdn.test",
        "/index.html",
        &["-H", "Accept-Encoding: gzip"],
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    // The origin's 404 becomes the error page, with its status.
    let (code, _, body) = edge(&v, "static.cdn.test", "/nothing.png", &[]);
    assert_eq!((code, body.as_str()), (404, "<h1>not here</h1>"));
    // A name that is not the distribution's is refused.
    assert_eq!(edge(&v, "elsewhere.test", "/", &[]).0, 403);
    // Each request is in the distribution's access log, with how the cache answered.
    let group = format!("cdn-{}", id.to_ascii_lowercase());
    wait_until("CDN access logs", 30, || {
        let l = v.ok(&[
            "logs",
            "env",
            &group,
            "--since",
            "5m",
            "--grep",
            "/nothing.png",
        ]);
        l.contains("GET\tstatic.cdn.test\t/nothing.png\t404")
            || l.contains("GET static.cdn.test /nothing.png 404")
    });
    let l = v.ok(&["logs", "env", &group, "--since", "5m"]);
    assert!(l.contains("Hit"), "{l}");

    // HTTPS under its alias, with the certificate from veeps' CA.
    let ca = v.data.join("pki").join("ca.crt");
    let resolve = format!("static.cdn.test:{}:127.0.0.1", v.cdn_tls_port);
    let (code, body) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &format!("https://static.cdn.test:{}/", v.cdn_tls_port),
    ]);
    assert_eq!(code, 200);
    assert!(body.starts_with("<h1>home</h1>"));
    // HTTP/2 when the client offers it (ALPN).
    let version = std::process::Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "-m",
            "10",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
        ])
        .args(["--cacert", ca.to_str().unwrap(), "--resolve", &resolve])
        .arg(format!("https://static.cdn.test:{}/", v.cdn_tls_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2");

    // A new version at the origin is not seen until the path is invalidated.
    v.write(
        "env/main.hcl",
        &std::fs::read_to_string(v.work.join("env/main.hcl"))
            .unwrap()
            .replace("<h1>home</h1>", "<h1>home v2</h1>"),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    assert!(edge(&v, "static.cdn.test", "/", &[])
        .2
        .starts_with("<h1>home</h1>"));
    let said = v.ok(&["cdn", "invalidate", "env", &id, "/index*"]);
    assert!(said.contains("forgotten"), "{said}");
    let (_, head, body) = edge(&v, "static.cdn.test", "/", &[]);
    assert!(body.starts_with("<h1>home v2</h1>"), "{body}");
    assert!(head.contains("x-cache: miss from veeps"), "{head}");
    // Bad paths and unknown distributions get clear errors.
    let bad = v.expect(&["cdn", "invalidate", "env", &id, "no-slash"], 1);
    assert!(bad.contains("starts with /"), "{bad}");
    let unknown = v.expect(&["cdn", "invalidate", "env", "ENOPE", "/*"], 1);
    assert!(unknown.contains("no distribution"), "{unknown}");

    // The edge outlives the control plane: killed, the server is not needed to answer.
    v.kill9();
    let (code, head, _) = edge(&v, "static.cdn.test", "/", &[]);
    assert_eq!(code, 200);
    assert!(head.contains("x-cache: hit from veeps"), "{head}");
    v.boot();
    v.ok(&["destroy", "env", "--auto-approve"]);
    wait_until("the distribution to stop answering", 30, || {
        edge(&v, "static.cdn.test", "/", &[]).0 == 403
    });
}
