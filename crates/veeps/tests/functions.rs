//! Functions through real Lambda clients: a function built on the official `lambda_runtime`
//! crate and a Python handler under `awslambdaric`, invoked with the AWS CLI and boto3
//! against the one AWS endpoint veeps serves S3 on.

use std::path::Path;
use std::process::Command;
use veeps_testkit::*;

/// The echo function (`sample-fn-echo`, built beside veeps) as a `provided` package.
fn stage_echo(v: &Veeps) -> String {
    let src = Path::new(bin()).parent().unwrap().join("sample-fn-echo");
    assert!(
        src.exists(),
        "{} is missing: build the workspace first (`./run test` does)",
        src.display()
    );
    let dir = v.work.join("echo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&src, dir.join("bootstrap")).unwrap();
    dir.to_string_lossy().into_owned()
}

const PYTHON_APP: &str = r#"import base64
import boto3

s3 = boto3.client("s3")

def handler(event, context):
    if "key" in event:
        body = s3.get_object(Bucket=event["bucket"], Key=event["key"])["Body"].read()
        return {"key": event["key"], "base64": base64.b64encode(body).decode()}
    print("hello from python", event.get("n"))
    return {"echo": event, "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis()}
"#;

fn config(echo: &str) -> String {
    format!(
        r#"
resource "function" "echo" {{
  name    = "echo"
  code    = "{echo}"
  runtime = "provided.al2023"
  environment = {{ GREETING = "hi" }}
}}
resource "function_url" "echo" {{
  function = function.echo.name
}}
resource "function" "slow" {{
  name    = "slow"
  code    = "{echo}"
  runtime = "provided"
  timeout = 2
}}
resource "function" "crash" {{
  name    = "crash"
  code    = "{echo}"
  runtime = "provided"
  environment = {{ CRASH_ON_INIT = "1" }}
}}
resource "function" "one" {{
  name                 = "one"
  code                 = "{echo}"
  runtime              = "provided"
  reserved_concurrency = 1
  timeout              = 30
}}
resource "iam_policy" "reader" {{
  name = "images-reader"
  policy = jsonencode({{
    Version   = "2012-10-17"
    Statement = [{{ Effect = "Allow", Action = "s3:GetObject", Resource = "arn:aws:s3:::fn-images/*" }}]
  }})
}}
resource "iam_role" "images" {{
  name     = "images"
  policies = [iam_policy.reader.name]
}}
resource "bucket" "images" {{
  bucket        = "fn-images"
  force_destroy = true
}}
resource "bucket_object" "pixel" {{
  bucket  = bucket.images.bucket
  key     = "pixel.gif"
  content = "GIF89a-pixel"
}}
resource "function" "images" {{
  name    = "s3-image-processing"
  code    = "py"
  runtime = "python3.11"
  handler = "app.handler"
  memory  = 128
  timeout = 30
  role    = iam_role.images.name
}}
"#
    )
}

/// `aws lambda invoke`: the CLI's own output and the payload written.
fn invoke(aws: &Aws, v: &Veeps, function: &str, payload: &str, extra: &[&str]) -> (String, String) {
    let out = v.work.join(format!("out-{}.json", rand_suffix()));
    let mut args = vec!["lambda", "invoke", "--function-name", function];
    args.extend_from_slice(raw_payloads());
    args.extend_from_slice(&["--payload", payload]);
    args.extend_from_slice(extra);
    let o = out.to_string_lossy().into_owned();
    args.push(&o);
    let meta = aws.ok(&args);
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    (meta, body)
}

/// `aws ARGS`, with [`raw_payloads`] when a payload is given.
fn lam(aws: &Aws, args: &[&str]) -> std::process::Output {
    let mut a = args.to_vec();
    if a.contains(&"--payload") {
        a.extend_from_slice(raw_payloads());
    }
    aws.run(&a)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn tail_of(meta: &str) -> String {
    let m = json(meta);
    let b64 = m["LogResult"].as_str().unwrap_or_default();
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn functions_run_under_the_lambda_runtime_api_and_answer_the_invoke_api() {
    require_root("functions run in namespaces of their own");
    let v = Veeps::start();
    let echo = stage_echo(&v);
    v.write("py/app.py", PYTHON_APP);
    v.write("env/main.hcl", &config(&echo));
    v.ok(&["apply", "env", "--auto-approve"]);
    let aws = Aws::new(&v);

    // The lambda_runtime function: its answer, its context, its variables.
    let (meta, body) = invoke(
        &aws,
        &v,
        "echo",
        r#"{"hello":"world","env":"GREETING"}"#,
        &[],
    );
    let m = json(&meta);
    assert_eq!(m["StatusCode"], 200, "{meta}");
    assert_eq!(m["ExecutedVersion"], "$LATEST", "{meta}");
    assert!(m.get("FunctionError").is_none(), "{meta}");
    let b = json(&body);
    assert_eq!(b["echo"]["hello"], "world", "{body}");
    assert_eq!(b["env"], "hi", "{body}");
    assert_eq!(
        b["function_arn"], "arn:veeps:lambda:env:function:echo",
        "{body}"
    );
    let first_pid = b["pid"].clone();
    // Warm: the same environment answers the next one.
    let (_, body) = invoke(&aws, &v, "echo", r#"{"n":2}"#, &[]);
    assert_eq!(
        json(&body)["pid"],
        first_pid,
        "a warm environment is reused"
    );

    // The function's URL: an HTTP request becomes Lambda's HTTP event (a binary body in
    // base64), and the function's JSON the answer.
    let host = format!("echo.lambda-url.localhost:{}", v.s3_port);
    let resolve = format!("{host}:127.0.0.1");
    let bin_body = v.work.join("body.bin");
    std::fs::write(&bin_body, [0u8, 159, 146, 150, 255]).unwrap();
    let (code, body) = curl(&[
        "--resolve",
        &resolve,
        "-H",
        "x-test: one",
        "-H",
        "cookie: a=1; b=2",
        "--data-binary",
        &format!("@{}", bin_body.display()),
        &format!("http://{host}/path/to?q=a%20b&q=c"),
    ]);
    assert_eq!(code, 200, "{body}");
    let ev = &json(&body)["echo"];
    assert_eq!(ev["version"], "2.0", "{body}");
    assert_eq!(ev["rawPath"], "/path/to", "{body}");
    assert_eq!(ev["requestContext"]["http"]["method"], "POST", "{body}");
    assert_eq!(ev["headers"]["x-test"], "one", "{body}");
    assert_eq!(ev["cookies"][1], "b=2", "{body}");
    assert_eq!(ev["queryStringParameters"]["q"], "a b,c", "{body}");
    assert_eq!(ev["isBase64Encoded"], true, "{body}");
    assert_eq!(ev["body"], "AJ+Slv8=", "{body}");
    let (code, _) = curl(&[
        "--resolve",
        &format!("nope.lambda-url.localhost:{}:127.0.0.1", v.s3_port),
        &format!("http://nope.lambda-url.localhost:{}/", v.s3_port),
    ]);
    // As AWS: an address that is no function URL is forbidden, not found.
    assert_eq!(code, 403);

    // The log's tail: START, what the function printed (no newline, bytes that are not
    // UTF-8), END and REPORT.
    let (meta, _) = invoke(
        &aws,
        &v,
        "echo",
        r#"{"print":"no newline here","print_bytes":[10,255,254,65]}"#,
        &["--log-type", "Tail"],
    );
    let tail = tail_of(&meta);
    assert!(tail.contains("START RequestId: "), "{tail}");
    assert!(tail.contains("no newline here\n"), "{tail}");
    assert!(tail.contains("\u{fffd}\u{fffd}A"), "{tail}");
    assert!(tail.contains("END RequestId: "), "{tail}");
    assert!(
        tail.contains("REPORT RequestId: ")
            && tail.contains("Billed Duration: ")
            && tail.contains("Max Memory Used: "),
        "{tail}"
    );
    // The same lines are in the log store, under the function's log group.
    let logs = v.ok(&["logs", "env", "/aws/lambda/echo"]);
    assert!(
        logs.contains("no newline here") && logs.contains("Init Duration: "),
        "{logs}"
    );

    // A handler's error.
    let (meta, body) = invoke(&aws, &v, "echo", r#"{"fail":"boom"}"#, &[]);
    assert_eq!(json(&meta)["FunctionError"], "Unhandled", "{meta}");
    assert!(body.contains("boom"), "{body}");

    // A timeout kills the environment and says so; the next invocation starts anew.
    let (meta, body) = invoke(&aws, &v, "slow", r#"{"sleep_ms":20000}"#, &[]);
    assert_eq!(json(&meta)["FunctionError"], "Unhandled", "{meta}");
    assert!(body.contains("Task timed out after 2.00 seconds"), "{body}");
    let (meta, _) = invoke(&aws, &v, "slow", r#"{"n":1}"#, &[]);
    assert!(json(&meta).get("FunctionError").is_none(), "{meta}");

    // A runtime that exits during init.
    let (meta, body) = invoke(&aws, &v, "crash", "{}", &[]);
    assert_eq!(json(&meta)["FunctionError"], "Unhandled", "{meta}");
    assert!(
        body.contains("Runtime.ExitError") && body.contains("exit status 3"),
        "{body}"
    );
    // And one that exits while handling an event.
    let (_, body) = invoke(&aws, &v, "echo", r#"{"exit":7}"#, &[]);
    assert!(
        body.contains("Runtime.ExitError") && body.contains("exit status 7"),
        "{body}"
    );

    // Payloads: at 6 MB accepted, past it refused; an answer past 6 MB is an error.
    let limit = 6 * 1024 * 1024;
    let pad = "x".repeat(limit - r#"{"quiet":1,"pad":""}"#.len());
    let at = v.work.join("at-limit.json");
    std::fs::write(&at, format!(r#"{{"quiet":1,"pad":"{pad}"}}"#)).unwrap();
    let at_arg = format!("fileb://{}", at.display());
    let (_, body) = invoke(&aws, &v, "echo", &at_arg, &[]);
    assert_eq!(json(&body)["bytes"], limit, "{body}");
    std::fs::write(&at, format!(r#"{{"quiet":1,"pad":"{pad}x"}}"#)).unwrap();
    let o = lam(
        &aws,
        &[
            "lambda",
            "invoke",
            "--function-name",
            "echo",
            "--payload",
            &at_arg,
            "/dev/null",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("RequestTooLargeException"),
        "{err}"
    );
    let (meta, body) = invoke(
        &aws,
        &v,
        "echo",
        &format!(r#"{{"big":{}}}"#, limit + 1),
        &[],
    );
    assert_eq!(json(&meta)["FunctionError"], "Unhandled", "{meta}");
    assert!(body.contains("Function.ResponseSizeTooLarge"), "{body}");

    // Bad input in Lambda's shapes.
    let o = aws.run(&["lambda", "invoke", "--function-name", "nope", "/dev/null"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ResourceNotFoundException"));
    let o = lam(
        &aws,
        &[
            "lambda",
            "invoke",
            "--function-name",
            "echo",
            "--payload",
            "{not json",
            "/dev/null",
        ],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("InvalidRequestContentException"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = aws.run(&[
        "lambda",
        "invoke",
        "--function-name",
        "echo",
        "--qualifier",
        "7",
        "/dev/null",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ResourceNotFoundException"));
    let wrong = Aws {
        secret: "not-the-secret".into(),
        ..Aws::new(&v)
    };
    let o = wrong.run(&["lambda", "invoke", "--function-name", "echo", "/dev/null"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("InvalidSignatureException"));
    // An unsigned caller, or one with a key that does not exist, is refused before its
    // body is read.
    let big = v.work.join("big.bin");
    std::fs::write(&big, vec![b'x'; 5 << 20]).unwrap();
    let invocations = format!("{}/2015-03-31/functions/echo/invocations", aws.endpoint);
    let (code, body) = curl(&[
        "--data-binary",
        &format!("@{}", big.display()),
        &invocations,
    ]);
    assert_eq!(code, 403, "{body}");
    let (code, body) = curl(&[
        "-H",
        "authorization: AWS4-HMAC-SHA256 Credential=VKNOSUCHKEY/20261201/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00",
        "--data-binary",
        &format!("@{}", big.display()),
        &invocations,
    ]);
    assert_eq!(code, 403, "{body}");
    let unknown = Aws {
        id: "VKNOSUCHKEY0000000".into(),
        ..Aws::new(&v)
    };
    let o = unknown.run(&["lambda", "invoke", "--function-name", "echo", "/dev/null"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("UnrecognizedClientException"));
    let dry = aws.ok(&[
        "lambda",
        "invoke",
        "--function-name",
        "echo",
        "--invocation-type",
        "DryRun",
        "/dev/null",
    ]);
    assert_eq!(json(&dry)["StatusCode"], 204, "{dry}");
    let listed = aws.ok(&["lambda", "list-functions"]);
    assert!(
        listed.contains("\"FunctionName\": \"s3-image-processing\""),
        "{listed}"
    );
    let got = aws.ok(&["lambda", "get-function", "--function-name", "echo"]);
    assert!(got.contains("\"Runtime\": \"provided.al2023\""), "{got}");

    // The Python handler under awslambdaric reads its bucket as its role, with no keys in
    // its code (the reference's s3-image-processing).
    let (meta, body) = invoke(
        &aws,
        &v,
        "s3-image-processing",
        r#"{"bucket":"fn-images","key":"pixel.gif"}"#,
        &["--log-type", "Tail"],
    );
    assert!(json(&meta).get("FunctionError").is_none(), "{meta} {body}");
    assert_eq!(json(&body)["base64"], "R0lGODlhLXBpeGVs", "{body}");
    let (_, body) = invoke(&aws, &v, "s3-image-processing", r#"{"n":5}"#, &[]);
    let b = json(&body);
    assert_eq!(b["echo"]["n"], 5, "{body}");
    assert!(b["remaining_ms"].as_i64().unwrap() > 20_000, "{body}");
    // boto3's lambda client against the same endpoint.
    let script = format!(
        "import boto3, json\nc = boto3.client('lambda', endpoint_url='{}', aws_access_key_id='{}', aws_secret_access_key='{}', region_name='us-east-1')\nr = c.invoke(FunctionName='echo', Payload=json.dumps({{'via': 'boto3'}}))\nprint(json.loads(r['Payload'].read())['echo']['via'], r['StatusCode'])\n",
        aws.endpoint, aws.id, aws.secret
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "boto3 200",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Reserved concurrency 1: a second invocation while the first runs is throttled.
    let busy = {
        let aws = Aws::new(&v);
        let out = v.work.join("busy.json");
        // It may itself meet a probe below running: it tries until it runs.
        std::thread::spawn(move || {
            for _ in 0..50 {
                let o = lam(
                    &aws,
                    &[
                        "lambda",
                        "invoke",
                        "--function-name",
                        "one",
                        "--payload",
                        r#"{"sleep_ms":8000}"#,
                        out.to_str().unwrap(),
                    ],
                );
                if !String::from_utf8_lossy(&o.stderr).contains("TooManyRequestsException") {
                    return o;
                }
            }
            panic!("the long invocation was throttled 50 times");
        })
    };
    // The CLI retries a throttled call (until the first ends): once is asked here.
    let once = Aws {
        endpoint: aws.endpoint.clone(),
        ..Aws::new(&v)
    };
    wait_until("the second invocation is throttled", 30, || {
        let o = once.run_with(
            &[("AWS_MAX_ATTEMPTS", "1"), ("AWS_RETRY_MODE", "standard")],
            &[
                "lambda",
                "invoke",
                "--function-name",
                "one",
                "--cli-read-timeout",
                "60",
                "/dev/null",
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        err.contains("TooManyRequestsException")
    });
    assert!(busy.join().unwrap().status.success());
    wait_until("functions' metrics are recorded", 60, || {
        let m = v.ok(&["metrics", "list", "env"]);
        m.contains("function_throttles_total") && m.contains("function_cold_starts_total")
    });
}

#[test]
fn asynchronous_invocations_are_queued_durably_retried_and_dead_lettered() {
    require_root("functions run in namespaces of their own");
    let mut v = Veeps::start_with(
        &[],
        &["--function-retry-delay", "1s", "--schedule-minute", "1s"],
    );
    let echo = stage_echo(&v);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
resource "bucket" "dead" {{
  bucket        = "fn-dead-letters"
  force_destroy = true
}}
resource "function" "echo" {{
  name    = "echo"
  code    = "{echo}"
  runtime = "provided"
}}
resource "schedule" "tick" {{
  name       = "tick"
  expression = "rate(2 minutes)"
  function   = function.echo.name
  input      = jsonencode({{ print = "tick-tock\n" }})
}}
resource "bucket" "uploads" {{
  bucket        = "fn-uploads"
  force_destroy = true
}}
resource "bucket_notification" "uploads" {{
  bucket = bucket.uploads.bucket
  function {{
    function      = function.echo.name
    events        = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    filter_prefix = "uploads/"
    filter_suffix = ".jpg"
  }}
}}
resource "function" "flaky" {{
  name               = "flaky"
  code               = "{echo}"
  runtime            = "provided"
  dead_letter_bucket = bucket.dead.bucket
}}
"#
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let aws = Aws::new(&v);

    // An event runs beside the answer: 202 now, its output in the log later.
    let (meta, _) = invoke(
        &aws,
        &v,
        "echo",
        r#"{"print":"async hello"}"#,
        &["--invocation-type", "Event"],
    );
    assert_eq!(json(&meta)["StatusCode"], 202, "{meta}");
    wait_until("the event ran", 60, || {
        v.ok(&["logs", "env", "/aws/lambda/echo"])
            .contains("async hello")
    });

    // Twenty events queued at once all run.
    let senders: Vec<_> = (0..20)
        .map(|i| {
            let aws = Aws::new(&v);
            std::thread::spawn(move || {
                lam(
                    &aws,
                    &[
                        "lambda",
                        "invoke",
                        "--function-name",
                        "echo",
                        "--invocation-type",
                        "Event",
                        "--payload",
                        &format!(r#"{{"print":"burst-{i}-done\n"}}"#),
                        "/dev/null",
                    ],
                )
            })
        })
        .collect();
    for s in senders {
        assert!(s.join().unwrap().status.success());
    }
    wait_until("every queued event ran", 60, || {
        let l = v.ok(&["logs", "env", "/aws/lambda/echo"]);
        (0..20).all(|i| l.contains(&format!("burst-{i}-done")))
    });

    // A schedule (its minutes a second long here) invokes its function with its input.
    wait_until("the schedule fired twice", 60, || {
        v.ok(&["logs", "env", "/aws/lambda/echo"])
            .matches("tick-tock")
            .count()
            >= 2
    });

    // Bucket notifications: a put and a delete under the filter reach the function in
    // S3's event format; a key outside it does not.
    let file = v.work.join("pic.jpg");
    std::fs::write(&file, b"jpeg").unwrap();
    aws.ok(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        "s3://fn-uploads/uploads/a b.jpg",
    ]);
    aws.ok(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        "s3://fn-uploads/other/c.jpg",
    ]);
    aws.ok(&["s3", "rm", "s3://fn-uploads/uploads/a b.jpg"]);
    wait_until("the bucket's events reached the function", 60, || {
        let l = v.ok(&["logs", "env", "/aws/lambda/echo"]);
        l.contains("s3 event ObjectCreated:Put uploads/a+b.jpg")
            && l.contains("s3 event ObjectRemoved:Delete uploads/a+b.jpg")
    });
    assert!(!v
        .ok(&["logs", "env", "/aws/lambda/echo"])
        .contains("other/c.jpg"));

    // An event that fails every time, with the server killed right after it was accepted:
    // the queue survives, the event runs three times (twice retried) and lands in the
    // dead-letter bucket in Lambda's destination format.
    let (meta, _) = invoke(
        &aws,
        &v,
        "flaky",
        r#"{"fail":"always"}"#,
        &["--invocation-type", "Event"],
    );
    assert_eq!(json(&meta)["StatusCode"], 202, "{meta}");
    v.kill9();
    v.boot();
    let aws = Aws::new(&v);
    let mut listed = String::new();
    wait_until("the failed event is dead-lettered", 90, || {
        listed =
            String::from_utf8_lossy(&aws.run(&["s3", "ls", "s3://fn-dead-letters/flaky/"]).stdout)
                .into_owned();
        listed.contains(".json")
    });
    let key = listed.split_whitespace().last().unwrap().to_string();
    let out = v.work.join("dead.json");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "fn-dead-letters",
        "--key",
        &format!("flaky/{key}"),
        out.to_str().unwrap(),
    ]);
    let rec = json(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        rec["requestContext"]["condition"], "RetriesExhausted",
        "{rec}"
    );
    assert_eq!(rec["requestContext"]["approximateInvokeCount"], 3, "{rec}");
    assert_eq!(rec["requestPayload"]["fail"], "always", "{rec}");
    assert!(
        rec["responsePayload"].to_string().contains("always"),
        "{rec}"
    );
    // The runs after the restart are in the log (the log store's last lines before a
    // kill -9 may be lost).
    let logs = v.ok(&["logs", "env", "/aws/lambda/flaky"]);
    assert!(logs.matches("START RequestId").count() >= 2, "{logs}");
}

#[test]
fn versions_pin_code_and_configuration_and_aliases_route_between_them() {
    require_root("functions run in namespaces of their own");
    let v = Veeps::start();
    let echo = stage_echo(&v);
    let config = |greeting: &str, aliases: &str| {
        format!(
            r#"
resource "function" "echo" {{
  name        = "echo"
  code        = "{echo}"
  runtime     = "provided"
  publish     = true
  environment = {{ GREETING = "{greeting}" }}
  secrets     = {{ TOKEN = var.token }}
}}
variable "token" {{
  type      = string
  sensitive = true
}}
{aliases}
output "version" {{
  value = function.echo.version
}}
"#
        )
    };
    v.write("env/main.hcl", &config("one", ""));
    v.ok(&[
        "apply",
        "env",
        "--auto-approve",
        "-var",
        "token=s3cr3t-token",
    ]);
    // The same configuration again publishes nothing new.
    v.ok(&[
        "apply",
        "env",
        "--auto-approve",
        "-var",
        "token=s3cr3t-token",
    ]);
    v.write(
        "env/main.hcl",
        &config(
            "two",
            r#"
resource "function_alias" "stable" {
  name             = "stable"
  function         = function.echo.name
  function_version = "1"
}
resource "function_alias" "canary" {
  name             = "canary"
  function         = function.echo.name
  function_version = "1"
  routing_config {
    additional_version_weights = { "2" = 1 }
  }
}
"#,
        ),
    );
    v.ok(&[
        "apply",
        "env",
        "--auto-approve",
        "-var",
        "token=s3cr3t-token",
    ]);
    let out = v.ok(&["output", "env"]);
    assert!(out.contains("\"2\""), "{out}");
    let aws = Aws::new(&v);
    let call = |qualifier: Option<&str>| {
        let mut extra = vec![];
        if let Some(q) = qualifier {
            extra.extend(["--qualifier", q]);
        }
        let (meta, body) = invoke(&aws, &v, "echo", r#"{"env":"GREETING"}"#, &extra);
        (
            json(&meta)["ExecutedVersion"].as_str().unwrap().to_string(),
            json(&body)["env"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(call(Some("1")), ("1".into(), "one".into()));
    // A secret reaches the function's environment, and is stored sealed.
    let (_, body) = invoke(&aws, &v, "echo", r#"{"env":"TOKEN"}"#, &[]);
    assert_eq!(json(&body)["env"], "s3cr3t-token", "{body}");
    let store = std::fs::read(v.data.join("state.redb")).unwrap();
    assert!(
        !store.windows(12).any(|w| w == b"s3cr3t-token"),
        "the secret is in the store in the clear"
    );
    assert_eq!(call(Some("2")), ("2".into(), "two".into()));
    assert_eq!(call(None), ("$LATEST".into(), "two".into()));
    assert_eq!(call(Some("stable")), ("1".into(), "one".into()));
    assert_eq!(call(Some("canary")), ("2".into(), "two".into()));
    let o = aws.run(&["lambda", "invoke", "--function-name", "echo:3", "/dev/null"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ResourceNotFoundException"));
    // An alias naming a version that does not exist is refused at apply.
    v.write(
        "env/main.hcl",
        &config(
            "two",
            r#"
resource "function_alias" "bad" {
  name             = "bad"
  function         = function.echo.name
  function_version = "9"
}
"#,
        ),
    );
    let err = v.expect(
        &[
            "apply",
            "env",
            "--auto-approve",
            "-var",
            "token=s3cr3t-token",
        ],
        1,
    );
    assert!(err.contains("no version 9"), "{err}");
}

/// Host pids of the processes whose environment names `function`.
fn runtime_pids(function: &str) -> Vec<i32> {
    let want = format!("AWS_LAMBDA_FUNCTION_NAME={function}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(&want))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn an_environment_is_confined_from_the_host_and_from_other_functions() {
    require_root("functions run in namespaces of their own");
    let mut v = Veeps::start();
    let echo = stage_echo(&v);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
resource "function" "small" {{
  name    = "small"
  code    = "{echo}"
  runtime = "provided"
  memory  = 128
  timeout = 30
}}
resource "function" "big" {{
  name              = "big"
  code              = "{echo}"
  runtime           = "provided"
  memory            = 1024
  ephemeral_storage = 512
  timeout           = 30
  environment       = {{ SECRET_OF_BIG = "b1g" }}
}}
"#
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let aws = Aws::new(&v);
    // `small` runs and stays warm; the host sees its runtime.
    let (meta, _) = invoke(&aws, &v, "small", r#"{"quiet":1}"#, &[]);
    assert!(!meta.contains("FunctionError"), "{meta}");
    let small = runtime_pids("small");
    assert!(!small.is_empty());
    let data_file = std::fs::read_dir(&v.data)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_file())
        .map(|e| e.path().to_string_lossy().into_owned())
        .unwrap();
    let probe = serde_json::json!({"probe": {
        "tmp_mb": 600,
        "read": ["/var/task/bootstrap", "/etc/shadow", format!("/proc/{}/environ", small[0]), data_file],
        "signal": [small[0], 1],
    }});
    let (meta, body) = invoke(&aws, &v, "big", &probe.to_string(), &[]);
    assert!(!meta.contains("FunctionError"), "{meta} {body}");
    let p = json(&body);
    // Its own unprivileged user, no capabilities, no way to gain any, the filter on.
    assert_ne!(p["uid"], "0", "{body}");
    assert_eq!(p["cap_eff"], "0000000000000000", "{body}");
    assert_eq!(p["cap_bnd"], "0000000000000000", "{body}");
    assert_eq!(p["no_new_privs"], "1", "{body}");
    assert_eq!(p["seccomp"], "2", "{body}");
    // Its own PID namespace: the runtime under a reaper, and nobody else.
    assert_eq!(p["pid"], 2, "{body}");
    assert!(p["pids"].as_u64().unwrap() <= 3, "{body}");
    // The code is read-only; /tmp takes ephemeral_storage and no more.
    assert!(
        p["task_write"].as_str().unwrap().contains("Read-only"),
        "{body}"
    );
    assert_eq!(p["tmp_written_mb"], 512, "{body}");
    assert!(
        p["tmp_error"].as_str().unwrap().contains("No space left"),
        "{body}"
    );
    // It reads its code, not the host's secrets, another function's environment or
    // veeps' data; it cannot signal another function's runtime.
    let read = &p["read"];
    assert_eq!(read["/var/task/bootstrap"], "ok", "{body}");
    for (path, r) in read.as_object().unwrap() {
        if path != "/var/task/bootstrap" {
            assert_ne!(r, "ok", "{path}: {body}");
        }
    }
    assert!(
        p["signal"][small[0].to_string()]
            .as_str()
            .unwrap()
            .contains("No such process"),
        "{body}"
    );
    // Nor can `small` see `big`'s variables from where it runs.
    let big = runtime_pids("big");
    assert!(!big.is_empty());
    let probe = serde_json::json!({"probe": {"read": [format!("/proc/{}/environ", big[0])]}});
    let (_, body) = invoke(&aws, &v, "small", &probe.to_string(), &[]);
    assert!(!body.contains("b1g"), "{body}");
    assert_ne!(
        json(&body)["read"][format!("/proc/{}/environ", big[0])],
        "ok",
        "{body}"
    );
    // Past its memory, `small` is killed and says so in Lambda's words; the next
    // invocation starts a fresh environment.
    let (meta, body) = invoke(&aws, &v, "small", r#"{"probe":{"alloc_mb":400}}"#, &[]);
    assert_eq!(json(&meta)["FunctionError"], "Unhandled", "{meta}");
    assert_eq!(json(&body)["errorType"], "Runtime.OutOfMemory", "{body}");
    let (meta, body) = invoke(&aws, &v, "small", r#"{"probe":{"alloc_mb":16}}"#, &[]);
    assert!(!meta.contains("FunctionError"), "{meta} {body}");
    assert_eq!(json(&body)["allocated_mb"], 16, "{body}");
    // A server killed with -9 leaves its environments (their waiter, reaper and runtime
    // share a cgroup); the next start kills them.
    let before = runtime_pids("small");
    assert!(!before.is_empty());
    v.kill9();
    v.boot();
    wait_until("the killed server's environments to end", 30, || {
        runtime_pids("small").iter().all(|p| !before.contains(p))
    });
    // Killed environments leave no process behind.
    v.ok(&["destroy", "env", "--auto-approve"]);
    wait_until("the runtimes to end", 30, || {
        runtime_pids("small").is_empty() && runtime_pids("big").is_empty()
    });
    v.cleanup_host();
}

#[test]
fn a_function_in_a_vpc_runs_in_its_subnet_and_leaves_no_endpoint_behind() {
    require_root("functions run in namespaces of their own");
    let v = Veeps::start();
    let echo = stage_echo(&v);
    let mut cfg = vpc("fnvpc", 231, 16, &[("private", 1, "private-app")]);
    cfg.push_str(&format!(
        r#"
resource "security_group" "fn" {{
  vpc_id = vpc.v.id
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "function" "inside" {{
  name            = "inside"
  code            = "{echo}"
  runtime         = "provided"
  subnets         = [subnet.private.id]
  security_groups = [security_group.fn.id]
}}
"#
    ));
    v.write("env/main.hcl", &cfg);
    v.ok(&["apply", "env", "--auto-approve"]);
    let aws = Aws::new(&v);
    let (_, body) = invoke(
        &aws,
        &v,
        "inside",
        r#"{"my_ip_towards":"10.231.1.1:53"}"#,
        &[],
    );
    let ip = json(&body)["ip"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.231.1."), "{body}");
    // Warm: the same environment, the same address.
    let (_, body) = invoke(
        &aws,
        &v,
        "inside",
        r#"{"my_ip_towards":"10.231.1.1:53"}"#,
        &[],
    );
    assert_eq!(json(&body)["ip"], ip.as_str(), "{body}");
    // Destroying the function removes its environments' endpoints (and the VPC can go).
    v.ok(&["destroy", "env", "--auto-approve"]);
    let prefix = veeps_net::prefix_for(&v.data);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    v.cleanup_host();
}

#[test]
fn a_balancer_path_is_answered_by_a_function_and_an_image_can_be_the_code() {
    require_root("functions run in namespaces of their own");
    let v = Veeps::start();
    let echo = stage_echo(&v);
    let port = free_port();
    let mut cfg = vpc("fnlb", 232, 16, &[("pub", 0, "public")]);
    cfg.push_str(&format!(
        r#"
resource "security_group" "lb" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = ["0.0.0.0/0"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "function" "echo" {{
  name    = "echo"
  code    = "{echo}"
  runtime = "provided"
}}
resource "image" "echo" {{
  name       = "echo"
  source     = "{echo}"
  entrypoint = ["./bootstrap"]
}}
resource "function" "from_image" {{
  name  = "from-image"
  image = image.echo.id
}}
resource "target_group" "fn" {{
  name                               = "fn"
  target_type                        = "lambda"
  function                           = function.echo.name
  lambda_multi_value_headers_enabled = true
}}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "http" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  host_port         = {port}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "404"
      message_body = "nothing here"
    }}
  }}
}}
resource "listener_rule" "fn" {{
  listener_arn = listener.http.arn
  priority     = 1
  condition {{
    path_pattern {{
      values = ["/fn/*"]
    }}
  }}
  action {{
    type             = "forward"
    target_group_arn = target_group.fn.arn
  }}
}}
"#
    ));
    v.write("env/main.hcl", &cfg);
    v.ok(&["apply", "env", "--auto-approve"]);
    let body = v.work.join("bin.dat");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(&body, &bytes).unwrap();
    let out = v.work.join("answer.dat");
    let url = format!("http://127.0.0.1:{port}/fn/x?q=1&q=2");
    let mut code = String::new();
    wait_until("the balancer answers from the function", 60, || {
        let o = Command::new("curl")
            .args(["-s", "--noproxy", "*", "-m", "10", "-D", "-", "-o"])
            .arg(&out)
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(&url)
            .output()
            .unwrap();
        code = String::from_utf8_lossy(&o.stdout).into_owned();
        code.starts_with("HTTP/1.1 200")
    });
    let headers = code.to_ascii_lowercase();
    assert!(headers.contains("x-path: /fn/x"), "{code}");
    assert!(headers.contains("x-method: post"), "{code}");
    assert!(
        headers.contains("x-q: 1") && headers.contains("x-q: 2"),
        "{code}"
    );
    assert!(
        headers.contains("set-cookie: a=1") && headers.contains("set-cookie: b=2"),
        "{code}"
    );
    // A binary body goes to the function in base64 and comes back as it was.
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // A function whose code is an image: its entrypoint runs under the Runtime API.
    let aws = Aws::new(&v);
    let (meta, body) = invoke(
        &aws,
        &v,
        "from-image",
        r#"{"env":"AWS_LAMBDA_FUNCTION_NAME"}"#,
        &[],
    );
    assert!(!meta.contains("FunctionError"), "{meta} {body}");
    assert_eq!(json(&body)["env"], "from-image", "{body}");
    let got = aws.ok(&["lambda", "get-function", "--function-name", "from-image"]);
    assert!(got.contains("\"PackageType\": \"Image\""), "{got}");
    // Other paths are the listener's.
    let (code, text) = curl(&[&format!("http://127.0.0.1:{port}/other")]);
    assert_eq!((code, text.as_str()), (404, "nothing here"));
    v.cleanup_host();
}
