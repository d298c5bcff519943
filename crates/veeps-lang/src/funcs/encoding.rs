//! Encoding functions.

use super::*;

pub(super) fn jsonencode(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        Value::String(serde_json::to_string(&a[0].to_json()).unwrap_or_default())
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
