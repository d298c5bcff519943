//! A function on the official `lambda_runtime` crate, as a user would write one: it answers
//! its event, and the event can ask it to misbehave (for veeps' tests): `sleep_ms`, `fail`
//! (an error), `print` (text to stdout, without a newline; `print_bytes` for raw bytes),
//! `big` (an answer of that many bytes), `quiet` (a short answer), `exit` (the process ends), `env` (a variable), `my_ip_towards` (its own address
//! towards that one).
//! `probe` reports what the environment lets it see and do (see [`probe`]).
//! A bucket notification's records are printed. With `PORT` set it is a plain HTTP server
//! answering the same JSON instead. With `CRASH_ON_INIT` set it exits before it asks for an event.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use std::io::Write;

async fn handle(e: LambdaEvent<Value>) -> Result<Value, Error> {
    let ev = e.payload;
    // A bucket notification: say what happened to which key.
    if let Some(records) = ev.get("Records").and_then(Value::as_array) {
        for r in records {
            println!(
                "s3 event {} {}",
                r["eventName"].as_str().unwrap_or_default(),
                r["s3"]["object"]["key"].as_str().unwrap_or_default()
            );
        }
    }
    if let Some(ms) = ev.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(t) = ev.get("print").and_then(Value::as_str) {
        let mut out = std::io::stdout();
        let _ = out.write_all(t.as_bytes());
        let _ = out.flush();
    }
    if let Some(b) = ev.get("print_bytes").and_then(Value::as_array) {
        let bytes: Vec<u8> = b
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u8)
            .collect();
        let mut out = std::io::stdout();
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
    if let Some(code) = ev.get("exit").and_then(Value::as_i64) {
        std::process::exit(code as i32);
    }
    if let Some(m) = ev.get("fail").and_then(Value::as_str) {
        return Err(m.to_string().into());
    }
    if let Some(n) = ev.get("big").and_then(Value::as_u64) {
        return Ok(Value::String("x".repeat(n as usize)));
    }
    // Behind a load balancer: answer its way, the body sent back as it came, the path,
    // method and the query's `q` in headers, and two cookies.
    if ev.pointer("/requestContext/elb").is_some() {
        let q = ev
            .pointer("/multiValueQueryStringParameters/q")
            .cloned()
            .or_else(|| ev.pointer("/queryStringParameters/q").map(|q| json!([q])))
            .unwrap_or(json!([]));
        let mut out = json!({
            "statusCode": 200,
            "statusDescription": "200 OK",
            "isBase64Encoded": ev["isBase64Encoded"],
            "body": ev["body"],
        });
        let headers = json!({
            "x-path": ev["path"],
            "x-method": ev["httpMethod"],
            "content-type": "application/octet-stream",
        });
        if ev.get("multiValueHeaders").is_some() {
            let mut m = serde_json::Map::new();
            for (k, v) in headers.as_object().into_iter().flatten() {
                m.insert(k.clone(), json!([v]));
            }
            m.insert("x-q".into(), q);
            m.insert("set-cookie".into(), json!(["a=1", "b=2"]));
            out["multiValueHeaders"] = m.into();
        } else {
            out["headers"] = headers;
        }
        return Ok(out);
    }
    if let Some(p) = ev.get("probe") {
        return Ok(probe(p));
    }
    if ev.get("quiet").is_some() {
        return Ok(json!({"bytes": ev.to_string().len()}));
    }
    // The address it reaches `my_ip_towards` from (which network it runs in).
    let ip = ev
        .get("my_ip_towards")
        .and_then(Value::as_str)
        .and_then(|to| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            s.connect(to).ok()?;
            Some(s.local_addr().ok()?.ip().to_string())
        });
    let var = ev
        .get("env")
        .and_then(Value::as_str)
        .map(|k| std::env::var(k).unwrap_or_default());
    Ok(json!({
        "echo": ev,
        "request_id": e.context.request_id,
        "function_arn": e.context.invoked_function_arn,
        "env": var,
        "pid": std::process::id(),
        "ip": ip,
    }))
}

/// What the environment lets the function see and do: its user and capabilities, the
/// processes it sees, whether its code is writable; then what is asked: `tmp_mb` written
/// to `/tmp` (how much went in), `alloc_mb` of memory touched, each path of `read` read,
/// each pid of `signal` sent signal 0.
fn probe(p: &Value) -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
    };
    let pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let task_write = outcome(std::fs::write("/var/task/probe", b"x"));
    let mut out = json!({
        "uid": field("Uid:"),
        "cap_eff": field("CapEff:"),
        "cap_bnd": field("CapBnd:"),
        "no_new_privs": field("NoNewPrivs:"),
        "seccomp": field("Seccomp:"),
        "pid": std::process::id(),
        "pids": pids,
        "task_write": task_write,
    });
    if let Some(mb) = p.get("tmp_mb").and_then(Value::as_u64) {
        let chunk = vec![7u8; 1 << 20];
        let mut written = 0u64;
        let err = match std::fs::File::create("/tmp/probe") {
            Ok(mut f) => loop {
                if written == mb {
                    break "ok".to_string();
                }
                match f.write_all(&chunk).and_then(|_| f.sync_data()) {
                    Ok(()) => written += 1,
                    Err(e) => break e.to_string(),
                }
            },
            Err(e) => e.to_string(),
        };
        let _ = std::fs::remove_file("/tmp/probe");
        out["tmp_written_mb"] = written.into();
        out["tmp_error"] = err.into();
    }
    if let Some(mb) = p.get("alloc_mb").and_then(Value::as_u64) {
        let mut v: Vec<Vec<u8>> = vec![];
        for _ in 0..mb {
            v.push(vec![1u8; 1 << 20]);
        }
        out["allocated_mb"] = (v.len() as u64).into();
    }
    let mut read = serde_json::Map::new();
    for path in p
        .get("read")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = path.as_str().unwrap_or_default();
        read.insert(path.into(), outcome(std::fs::read(path).map(|_| ())).into());
    }
    out["read"] = read.into();
    let mut signal = serde_json::Map::new();
    let pids = p
        .get("signal")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for pid in pids.filter_map(Value::as_i64) {
        // SAFETY: kill(2) with signal 0 only checks whether the signal could be sent.
        let r = unsafe { libc::kill(pid as i32, 0) };
        let e = if r == 0 {
            "ok".to_string()
        } else {
            std::io::Error::last_os_error().to_string()
        };
        signal.insert(pid.to_string(), e.into());
    }
    out["signal"] = signal.into();
    out
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The same answer as a plain HTTP server on $PORT (what bench/functions.sh compares
    // invocations with).
    if std::env::var_os("PORT").is_some() {
        return sample_apps::serve(|path| async move {
            sample_apps::text(
                hyper::StatusCode::OK,
                json!({"echo": {"rawPath": path}, "pid": std::process::id()}).to_string(),
            )
        })
        .await
        .map_err(Error::from);
    }
    if std::env::var_os("CRASH_ON_INIT").is_some() {
        eprintln!("crashing on init, as asked");
        std::process::exit(3);
    }
    lambda_runtime::run(service_fn(handle)).await
}
