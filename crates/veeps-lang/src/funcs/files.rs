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
