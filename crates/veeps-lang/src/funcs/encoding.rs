//! Encoding functions.

use super::*;

pub(super) fn jsonencode(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        // As Go's encoding/json writes it: <, >, & and the line separators escaped, so the
        // text can sit inside HTML.
        let text = serde_json::to_string(&a[0].to_json()).unwrap_or_default();
        Value::String(
            text.replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029"),
        )
    })
}

pub(super) fn jsondecode(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let s = c.str(0)?;
        let j: serde_json::Value =
            serde_json::from_str(&s).map_err(|e| c.arg_err(0, format!("invalid JSON: {e}")))?;
        Value::from_json(&j)
    })
}

pub(super) fn base64encode(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::String(base64::engine::general_purpose::STANDARD.encode(c.str(0)?))
    })
}

pub(super) fn base64decode(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(c.str(0)?)
            .map_err(|e| c.arg_err(0, format!("invalid base64: {e}")))?;
        Value::String(
            String::from_utf8(bytes)
                .map_err(|_| c.arg_err(0, "the decoded bytes are not UTF-8"))?,
        )
    })
}

pub(super) fn sha256(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::String(hex::encode(sha2::Sha256::digest(c.str(0)?.as_bytes())))
    })
}

pub(super) fn md5(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(Value::String(hex::encode(md5::Md5::digest(
        c.str(0)?.as_bytes(),
    ))))
}

pub(super) fn sha1(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(Value::String(hex::encode(sha1::Sha1::digest(
        c.str(0)?.as_bytes(),
    ))))
}

pub(super) fn sha512(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(Value::String(hex::encode(sha2::Sha512::digest(
        c.str(0)?.as_bytes(),
    ))))
}

pub(super) fn base64sha256(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let d = sha2::Sha256::digest(c.str(0)?.as_bytes());
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(d),
    ))
}

pub(super) fn base64sha512(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let d = sha2::Sha512::digest(c.str(0)?.as_bytes());
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(d),
    ))
}

/// `urlencode(s)`, as Go's `url.QueryEscape`: letters, digits and `-_.~` stay, spaces
/// become `+`, every other byte `%XX`.
pub(super) fn urlencode(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let mut out = String::new();
    for b in c.str(0)?.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(Value::String(out))
}

/// The encodings `textencodebase64` and `textdecodebase64` know.
fn encoding_of(c: &Call, i: usize) -> Result<&'static str, Diagnostic> {
    let name = c.str(i)?.to_ascii_uppercase().replace('_', "-");
    match name.as_str() {
        "UTF-8" | "UTF8" => Ok("UTF-8"),
        "UTF-16LE" => Ok("UTF-16LE"),
        "UTF-16BE" => Ok("UTF-16BE"),
        "ISO-8859-1" | "LATIN1" => Ok("ISO-8859-1"),
        _ => Err(c.arg_err(
            i,
            format!("{name:?} is not an encoding veeps knows: use UTF-8, UTF-16LE, UTF-16BE or ISO-8859-1"),
        )),
    }
}

pub(super) fn textencodebase64(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let s = c.str(0)?;
    let bytes: Vec<u8> = match encoding_of(c, 1)? {
        "UTF-16LE" => s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        "UTF-16BE" => s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect(),
        "ISO-8859-1" => s
            .chars()
            .map(|ch| {
                u8::try_from(u32::from(ch))
                    .map_err(|_| c.arg_err(0, format!("{ch:?} has no ISO-8859-1 encoding")))
            })
            .collect::<Result<_, _>>()?,
        _ => s.into_bytes(),
    };
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

pub(super) fn textdecodebase64(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(c.str(0)?)
        .map_err(|e| c.arg_err(0, format!("invalid base64: {e}")))?;
    let bad = || c.arg_err(0, "the decoded bytes are not valid in that encoding");
    let text = match encoding_of(c, 1)? {
        enc @ ("UTF-16LE" | "UTF-16BE") => {
            if bytes.len() % 2 != 0 {
                return Err(bad());
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|p| match enc {
                    "UTF-16LE" => u16::from_le_bytes([p[0], p[1]]),
                    _ => u16::from_be_bytes([p[0], p[1]]),
                })
                .collect();
            String::from_utf16(&units).map_err(|_| bad())?
        }
        "ISO-8859-1" => bytes.iter().map(|b| char::from(*b)).collect(),
        _ => String::from_utf8(bytes).map_err(|_| bad())?,
    };
    Ok(Value::String(text))
}

/// `uuidv5(namespace, name)`: RFC 4122's name-based UUID (SHA-1), the namespace `dns`,
/// `url`, `oid`, `x500` or a UUID.
pub(super) fn uuidv5(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let ns = match c.str(0)?.as_str() {
        "dns" => "6ba7b810-9dad-11d1-80b4-00c04fd430c8".to_string(),
        "url" => "6ba7b811-9dad-11d1-80b4-00c04fd430c8".to_string(),
        "oid" => "6ba7b812-9dad-11d1-80b4-00c04fd430c8".to_string(),
        "x500" => "6ba7b814-9dad-11d1-80b4-00c04fd430c8".to_string(),
        other => other.to_string(),
    };
    let hexed: String = ns.chars().filter(|ch| *ch != '-').collect();
    let ns_bytes = match hex::decode(&hexed) {
        Ok(b) if b.len() == 16 && ns.len() == 36 => b,
        _ => {
            return Err(c.arg_err(
                0,
                format!("{ns:?} is not a UUID, nor dns, url, oid or x500"),
            ))
        }
    };
    let mut h = sha1::Sha1::new();
    h.update(&ns_bytes);
    h.update(c.str(1)?.as_bytes());
    let mut u: Vec<u8> = h.finalize()[..16].to_vec();
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let x = hex::encode(u);
    Ok(Value::String(format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )))
}

/// `csvdecode(s)`: RFC 4180 CSV, the first line naming the fields; a list of objects of
/// strings, every row with as many fields as the first.
pub(super) fn csvdecode(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let text = c.str(0)?;
    let mut rows: Vec<Vec<String>> = vec![];
    let mut row: Vec<String> = vec![];
    let mut field = String::new();
    let mut quoted = false;
    let mut at_start = true;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if quoted {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(ch),
            }
            continue;
        }
        match ch {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_start = true;
            }
            '"' => {
                return Err(c.arg_err(
                    0,
                    format!("a bare \" in a field of line {}", rows.len() + 1),
                ))
            }
            _ => {
                field.push(ch);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(c.arg_err(0, "a quoted field is not closed"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    let mut rows = rows.into_iter();
    let Some(header) = rows.next() else {
        return Err(c.arg_err(0, "missing the header line (the fields' names)"));
    };
    let mut out = vec![];
    for (n, r) in rows.enumerate() {
        if r.len() != header.len() {
            return Err(c.arg_err(
                0,
                format!(
                    "line {} has {} fields, the header {}",
                    n + 2,
                    r.len(),
                    header.len()
                ),
            ));
        }
        out.push(Value::Object(
            header
                .iter()
                .cloned()
                .zip(r.into_iter().map(Value::String))
                .collect(),
        ));
    }
    Ok(Value::List(out))
}

/// `uuid()`: a random version 4 UUID, in lower case.
pub(super) fn uuid(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(0, 0)?;
    if !c.ctx.scope.applying() {
        return Ok(Value::Unknown);
    }
    let mut u: [u8; 16] = rand::random();
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    let x = hex::encode(u);
    Ok(Value::String(format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )))
}

/// `base64gzip(s)`: `s` gzip-compressed, then base64-encoded.
pub(super) fn base64gzip(c: &Call) -> Result<Value, Diagnostic> {
    use std::io::Write;
    c.arity(1, 1)?;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(c.str(0)?.as_bytes())
        .and_then(|_| e.finish())
        .map(|gz| Value::String(base64::engine::general_purpose::STANDARD.encode(gz)))
        .map_err(|err| c.arg_err(0, format!("compressing: {err}")))
}

/// `bcrypt(s, cost)`: a bcrypt hash (`$2a$`, cost 10 unless given), as Go's
/// `golang.org/x/crypto/bcrypt` makes it; a new salt each evaluation.
pub(super) fn bcrypt(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 2)?;
    let s = c.str(0)?;
    // Below the least cost, Go's bcrypt takes its default (10); above 31 it refuses.
    let cost = match if c.args.len() == 2 { c.int(1)? } else { 10 } {
        n if n < 4 => 10,
        n if n > 31 => {
            return Err(c.arg_err(1, format!("the cost must be at most 31, got {n}")));
        }
        n => n,
    };
    if s.len() > 72 {
        return Err(c.arg_err(0, "bcrypt takes at most 72 bytes"));
    }
    ::bcrypt::hash_with_result(s.as_bytes(), cost as u32)
        .map(|h| Value::String(h.format_for_version(::bcrypt::Version::TwoA)))
        .map_err(|e| c.err(e.to_string()))
}

/// `rsadecrypt(ciphertext, key)`: base64 RSA PKCS #1 v1.5 ciphertext decrypted with a PEM
/// private key (PKCS #1 or PKCS #8).
pub(super) fn rsadecrypt(c: &Call) -> Result<Value, Diagnostic> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    c.arity(2, 2)?;
    let ct = base64::engine::general_purpose::STANDARD
        .decode(c.str(0)?.trim())
        .map_err(|_| c.arg_err(0, "failed to decode input: it is not base64"))?;
    let pem = c.str(1)?;
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(&pem))
        .map_err(|_| c.arg_err(1, "not a PEM-encoded RSA private key"))?;
    let plain = key
        .decrypt(rsa::Pkcs1v15Encrypt, &ct)
        .map_err(|_| c.err("failed to decrypt: the ciphertext does not match the key"))?;
    String::from_utf8(plain)
        .map(Value::String)
        .map_err(|_| c.err("the decrypted text is not valid UTF-8"))
}
