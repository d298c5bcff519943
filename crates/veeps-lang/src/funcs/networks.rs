//! Networks functions.

use super::*;

pub(super) fn cidrhost(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let net = c.cidr(0)?;
        let n = c.int(1)?;
        Value::String(cidr_host(&net, n).map_err(|e| c.arg_err(1, e))?.to_string())
    })
}

pub(super) fn cidrnetmask(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        match c.cidr(0)? {
            IpNet::V4(n) => Value::String(n.netmask().to_string()),
            IpNet::V6(_) => return Err(c.arg_err(0, "only IPv4 prefixes have a netmask")),
        }
    })
}

pub(super) fn cidrsubnet(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(3, 3)?;
        let net = c.cidr(0)?;
        let bits = c.int(1)?;
        let num = c.int(2)?;
        Value::String(
            cidr_subnet(&net, bits, num)
                .map_err(|e| c.err(e))?
                .to_string(),
        )
    })
}

pub(super) fn cidrsubnets(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, usize::MAX)?;
        let net = c.cidr(0)?;
        let mut out = Vec::new();
        let mut next: u128 = 0;
        let total = net.max_prefix_len();
        for i in 1..a.len() {
            let bits = c.int(i)?;
            let new_len = net.prefix_len() as i64 + bits;
            if bits < 1 || new_len > total as i64 {
                return Err(c.arg_err(
                    i,
                    format!("cannot extend /{} by {bits} bits", net.prefix_len()),
                ));
            }
            let size: u128 = 1u128
                .checked_shl((total as i64 - new_len) as u32)
                .filter(|_| total as i64 - new_len < 128)
                .unwrap_or(u128::MAX);
            let aligned = next.div_ceil(size).saturating_mul(size);
            let idx = aligned / size;
            let sub = cidr_subnet(&net, bits, idx as i64).map_err(|e| c.arg_err(i, e))?;
            out.push(Value::String(sub.to_string()));
            next = aligned.saturating_add(size);
        }
        Value::List(out)
    })
}
