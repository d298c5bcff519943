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

/// `pathexpand(path)`: a leading `~` becomes the home directory of the user who ran the
/// CLI.
pub(super) fn pathexpand(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    let home = match c.ctx.scope.bundle().map(|b| b.client.home.clone()) {
        Some(h) if !h.is_empty() => h,
        _ => std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
    };
    Ok(Value::String(match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => p,
    }))
}

/// `abspath(path)`: `path` made absolute against the directory the CLI ran in, cleaned as
/// Go's `filepath.Abs` cleans it.
pub(super) fn abspath(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let p = c.str(0)?;
    if p.starts_with('/') {
        return Ok(Value::String(clean(&p)));
    }
    let cwd = c
        .ctx
        .scope
        .bundle()
        .map(|b| b.client.cwd.clone())
        .unwrap_or_default();
    if cwd.is_empty() {
        return Err(c.err("the directory the configuration was sent from is not known here"));
    }
    Ok(Value::String(clean(&format!("{cwd}/{p}"))))
}

/// `fileset(path, pattern)`: the configuration's files under `path` whose path relative to
/// it matches `pattern` (`*`, `**`, `?`, `[...]`, `{a,b}`), sorted.
pub(super) fn fileset(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let dir = crate::config::normalize_path(&c.str(0)?);
    let pattern = c.str(1)?;
    let re = glob_regex(&pattern).map_err(|e| c.arg_err(1, e))?;
    let prefix = if dir.is_empty() || dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    let Some(bundle) = c.ctx.scope.bundle() else {
        return Ok(Value::List(vec![]));
    };
    // A directory as written, or else relative to the root module's directory.
    let prefix = if prefix.is_empty() || bundle.files.keys().any(|k| k.starts_with(&prefix)) {
        prefix
    } else {
        let rooted = crate::config::join_path(&bundle.root, &dir);
        if rooted.is_empty() || rooted == "." {
            String::new()
        } else {
            format!("{rooted}/")
        }
    };
    // Bundle paths are in order already.
    Ok(Value::List(
        bundle
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(prefix.as_str()))
            .filter(|rel| re.is_match(rel))
            .map(Value::string)
            .collect(),
    ))
}

/// A doublestar glob as an anchored regular expression.
fn glob_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut braces = 0;
    while i < chars.len() {
        let ch = chars[i];
        match ch {
            '*' if chars.get(i + 1) == Some(&'*') => {
                let at_start = i == 0 || chars[i - 1] == '/';
                let slash_after = chars.get(i + 2) == Some(&'/');
                let at_end = i + 2 == chars.len();
                if at_start && slash_after {
                    re.push_str("(?:[^/]*/)*");
                    i += 3;
                    continue;
                } else if at_start && at_end {
                    re.push_str(".*");
                    i += 2;
                    continue;
                }
                re.push_str("[^/]*");
                i += 2;
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&x| x == ']')
                    .ok_or_else(|| format!("unclosed '[' in pattern \"{pattern}\""))?;
                let class: String = chars[i + 1..i + 1 + close].iter().collect();
                let class = class
                    .strip_prefix('!')
                    .map(|r| format!("^{r}"))
                    .unwrap_or(class);
                re.push('[');
                re.push_str(&class.replace('\\', "\\\\"));
                re.push(']');
                i += close + 2;
                continue;
            }
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            ',' if braces > 0 => re.push('|'),
            '\\' => {
                if let Some(n) = chars.get(i + 1) {
                    re.push_str(&regex::escape(&n.to_string()));
                    i += 2;
                    continue;
                }
                re.push_str("\\\\");
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    if braces > 0 {
        return Err(format!("unclosed '{{' in pattern \"{pattern}\""));
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("pattern \"{pattern}\": {e}"))
}
