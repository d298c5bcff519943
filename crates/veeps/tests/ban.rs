//! Intrusion detection end to end: a brute force on the API and on S3 from another
//! loopback address is banned in the kernel's nftables set (and by the listeners), listed,
//! audited, lifted on time or by an operator; the host itself is never banned.

use veeps_testkit::*;

const POLICY: &str = r#"
resource "ban_policy" "public" {
  name = "public"
  jail {
    source    = "api"
    max_retry = 3
    find_time = 60
    ban_time  = 4
    increment = false
  }
  jail {
    source    = "s3"
    max_retry = 3
    find_time = 60
    ban_time  = 600
  }
}
"#;

/// An API call from `from` with a wrong token: its status, 0 when the packets are dropped.
fn api_from(v: &Veeps, from: &str) -> u16 {
    curl(&[
        "--interface",
        from,
        "--connect-timeout",
        "1",
        "-H",
        "authorization: Bearer wrong",
        &format!("http://127.0.0.1:{}/v1/envs", v.port),
    ])
    .0
}

/// Whether the kernel's set holds `addr`.
fn in_set(v: &Veeps, addr: &str) -> bool {
    let table = format!("{}ban", veeps_net::prefix_for(&v.data));
    let o = std::process::Command::new("nft")
        .args(["list", "set", "inet", &table, "ban4"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains(addr)
}

#[test]
fn brute_force_on_the_api_and_s3_is_banned_and_lifted_on_time() {
    require_root("nftables bans");
    let v = Veeps::start();
    v.write("env/main.hcl", POLICY);
    v.ok(&["apply", "env", "--auto-approve"]);

    // Three failures from 127.0.0.2 ban it; the host (127.0.0.1) is never banned.
    for _ in 0..3 {
        assert_eq!(api_from(&v, "127.0.0.2"), 401);
        assert_eq!(api_from(&v, "127.0.0.1"), 401);
    }
    wait_until("127.0.0.2 is in the kernel's ban set", 10, || {
        in_set(&v, "127.0.0.2")
    });
    assert_eq!(api_from(&v, "127.0.0.2"), 0, "its packets are dropped");
    assert_eq!(api_from(&v, "127.0.0.1"), 401, "the host is not banned");
    let o = v.ok(&["bans"]);
    assert!(
        o.contains("127.0.0.2") && o.contains("env/public/api"),
        "{o}"
    );
    // Lifted on time: the kernel forgets it, and so does veeps.
    wait_until("the ban of 127.0.0.2 ends", 30, || {
        !in_set(&v, "127.0.0.2") && api_from(&v, "127.0.0.2") == 401
    });
    wait_until("veeps lists no ban", 10, || {
        v.ok(&["bans"]).contains("no address is banned")
    });

    // S3: requests signed with a key that does not exist.
    let s3 = format!("http://127.0.0.1:{}/some-bucket/key", v.s3_port);
    let bad_sig = |from: &str| {
        let now = std::process::Command::new("date")
            .args(["-u", "+%Y%m%dT%H%M%SZ"])
            .output()
            .unwrap();
        let now = String::from_utf8_lossy(&now.stdout).trim().to_string();
        curl(&[
            "--interface",
            from,
            "--connect-timeout",
            "1",
            "-H",
            &format!("x-amz-date: {now}"),
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "-H",
            &format!("authorization: AWS4-HMAC-SHA256 Credential=VKNOSUCHKEY0000/{}/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000", &now[..8]),
            &s3,
        ])
    };
    for _ in 0..3 {
        let (code, body) = bad_sig("127.0.0.3");
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("InvalidAccessKeyId"), "{body}");
    }
    wait_until("127.0.0.3 is in the kernel's ban set", 10, || {
        in_set(&v, "127.0.0.3")
    });
    assert_eq!(bad_sig("127.0.0.3").0, 0);
    // An operator lifts it.
    v.ok(&["unban", "127.0.0.3"]);
    wait_until("127.0.0.3 is out of the set", 10, || {
        !in_set(&v, "127.0.0.3")
    });
    assert_eq!(bad_sig("127.0.0.3").0, 403);

    // Bans and unbans are in the audit log.
    let audit = v.ok(&["audit"]);
    assert!(
        audit.contains("banned 127.0.0.2/32 for 4 s by jail env/public/api"),
        "{audit}"
    );
    assert!(
        audit.contains("unbanned 127.0.0.3/32: lifted by an operator"),
        "{audit}"
    );
}
