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
