//! Files functions.

use super::*;

pub(super) fn file(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let p = c.str(0)?;
        let content = c.ctx.scope.read_file(&crate::config::normalize_path(&p));
        if c.name == "fileexists" {
            Value::Bool(content.is_some())
        } else {
            Value::String(content.ok_or_else(|| c.arg_err(0, format!("no file \"{p}\" in the configuration (paths are relative to where the command runs; use path.module)")))?)
        }
    })
}

pub(super) fn templatefile(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let p = c.str(0)?;
        let vars = c.obj(1)?;
        let text = c
            .ctx
            .scope
            .read_file(&crate::config::normalize_path(&p))
            .ok_or_else(|| c.arg_err(0, format!("no file \"{p}\" in the configuration")))?;
        crate::eval::eval_template_text(&text, &p, vars, &crate::eval::EmptyScope)?
    })
}

/// Go's `path/filepath.Clean` on a slash-separated path.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = vec![];
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `basename(path)`, as Go's `filepath.Base`.
pub(super) fn basename(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    let trimmed = p.trim_end_matches('/');
    Ok(Value::String(match (p.is_empty(), trimmed.is_empty()) {
        (true, _) => ".".into(),
        (false, true) => "/".into(),
        _ => trimmed.rsplit('/').next().unwrap_or(trimmed).to_string(),
    }))
}

/// `dirname(path)`, as Go's `filepath.Dir`.
pub(super) fn dirname(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    Ok(Value::String(clean(dir)))
}

/// `filemd5`, `filesha1`, `filesha256`, `filesha512`, `filebase64`, `filebase64sha256`,
/// `filebase64sha512`: a file of the configuration, hashed or encoded.
pub(super) fn filehash(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    let content = c
        .ctx
        .scope
        .read_file(&crate::config::normalize_path(&p))
        .ok_or_else(|| c.arg_err(0, format!("no file \"{p}\" in the configuration (paths are relative to where the command runs; use path.module)")))?;
    let bytes = content.as_bytes();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    Ok(Value::String(match c.name {
        "filemd5" => hex::encode(md5::Md5::digest(bytes)),
        "filesha1" => hex::encode(sha1::Sha1::digest(bytes)),
        "filesha256" => hex::encode(sha2::Sha256::digest(bytes)),
        "filesha512" => hex::encode(sha2::Sha512::digest(bytes)),
        "filebase64sha256" => b64(&sha2::Sha256::digest(bytes)),
        "filebase64sha512" => b64(&sha2::Sha512::digest(bytes)),
        _ => b64(bytes),
    }))
}

/// `pathexpand(path)`: a leading `~` becomes the home directory.
pub(super) fn pathexpand(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Ok(Value::String(match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => p,
    }))
}
