//! The policy language veeps speaks, in AWS IAM's grammar (`Version`, `Statement` with
//! `Sid`, `Effect`, `Principal`/`NotPrincipal`, `Action`/`NotAction`,
//! `Resource`/`NotResource` with `*` and `?` wildcards, `Condition` with AWS's operators
//! and `IfExists`), and its one evaluator, with AWS's rules: an explicit Deny in any policy
//! wins, then an Allow, otherwise the request is denied. What a policy may name (services,
//! resources, condition keys, whether it names principals) is a [`Grammar`]: bucket
//! policies are one, identity policies another. What a request offers to conditions is a
//! [`Context`]. Nothing is ignored: an element, operator or key the grammar does not know
//! is refused with what to change.

pub mod directory;
pub mod http;
pub mod part;
pub mod password;
pub mod resources;
pub mod sigv4;
pub mod totp;

use serde_json::Value as Json;

/// What a policy may say.
#[derive(Debug, Clone)]
pub struct Grammar {
    /// Action prefixes allowed besides `*` (like `s3:`), lowercase.
    pub actions: &'static [&'static str],
    /// Resource prefixes allowed besides `*` (like `arn:aws:s3:::`).
    pub resources: &'static [&'static str],
    /// Condition keys evaluated (case-insensitive).
    pub keys: &'static [&'static str],
    /// Statements name a `Principal` (resource policies) or must not (identity policies).
    pub principals: bool,
}

/// What a request offers to a policy besides its action and resource.
pub trait Context {
    /// The user making the request (`None`: anonymous).
    fn principal(&self) -> Option<&str>;
    /// The value of condition key `key` (lowercase), if the request has one.
    fn key(&self, key: &str) -> Option<String>;
}

/// What a policy (or a set of them) says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by some statement and denied by none.
    Allow,
    /// Denied explicitly.
    Deny,
    /// No statement applies: denied unless another policy allows.
    NotApplicable,
}

/// AWS's evaluation across policies: an explicit Deny anywhere wins, then any Allow; with
/// neither the request is denied (`NotApplicable`).
pub fn evaluate(policies: &[&Policy], cx: &dyn Context, action: &str, resource: &str) -> Decision {
    let mut d = Decision::NotApplicable;
    for p in policies {
        match p.decide(cx, action, resource) {
            Decision::Deny => return Decision::Deny,
            Decision::Allow => d = Decision::Allow,
            Decision::NotApplicable => {}
        }
    }
    d
}

/// Condition operators veeps evaluates (each also with `IfExists`).
pub const CONDITION_OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "IpAddress",
    "NotIpAddress",
    "Null",
];

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    /// `(names, negated)`: `Principal` or `NotPrincipal`.
    principal: (Vec<String>, bool),
    action: (Vec<String>, bool),
    resource: (Vec<String>, bool),
    /// `(operator, key, values)`.
    conditions: Vec<(String, String, Vec<String>)>,
}

fn strings(v: &Json) -> Result<Vec<String>, String> {
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Bool(b) => Ok(vec![b.to_string()]),
        Json::Number(n) => Ok(vec![n.to_string()]),
        Json::Array(a) => a
            .iter()
            .map(|x| strings(x).map(|mut v| v.remove(0)))
            .collect(),
        _ => Err("expected a string or a list of strings".into()),
    }
}

/// One of `name` or `Not<name>`, exactly one present.
fn either(
    s: &serde_json::Map<String, Json>,
    name: &str,
    i: usize,
) -> Result<(Vec<String>, bool), String> {
    let not = format!("Not{name}");
    match (s.get(name), s.get(&not)) {
        (Some(v), None) => Ok((
            strings(v).map_err(|e| format!("statement {i}: {name}: {e}"))?,
            false,
        )),
        (None, Some(v)) => Ok((
            strings(v).map_err(|e| format!("statement {i}: {not}: {e}"))?,
            true,
        )),
        (None, None) => Err(format!("statement {i}: {name} (or {not}) is missing")),
        (Some(_), Some(_)) => Err(format!("statement {i}: give {name} or {not}, not both")),
    }
}

fn principals(v: &Json, i: usize) -> Result<Vec<String>, String> {
    match v {
        Json::String(s) if s == "*" => Ok(vec!["*".into()]),
        Json::Object(o) => {
            let mut out = vec![];
            for (k, v) in o {
                if k != "AWS" {
                    return Err(format!(
                        "statement {i}: principal type {k} is not known here (use \"AWS\" with user ARNs or \"*\")"
                    ));
                }
                out.extend(strings(v).map_err(|e| format!("statement {i}: Principal: {e}"))?);
            }
            Ok(out)
        }
        _ => Err(format!(
            "statement {i}: Principal is \"*\" or {{\"AWS\": [user ARNs]}}"
        )),
    }
}

impl Policy {
    /// Parses and checks a policy document against `g`; the error says what is wrong and
    /// where.
    pub fn parse(p: &str, g: &Grammar) -> Result<Policy, String> {
        let doc: Json =
            serde_json::from_str(p).map_err(|e| format!("the policy is not JSON: {e}"))?;
        let Json::Object(top) = &doc else {
            return Err("the policy is a JSON object with a Statement".into());
        };
        for k in top.keys() {
            if !["Version", "Id", "Statement"].contains(&k.as_str()) {
                return Err(format!("the policy has an unknown element {k}"));
            }
        }
        let statements = match top.get("Statement") {
            Some(Json::Array(a)) => a.clone(),
            Some(o @ Json::Object(_)) => vec![o.clone()],
            _ => return Err("the policy needs a Statement (a list of statements)".into()),
        };
        let mut out = vec![];
        for (i, st) in statements.iter().enumerate() {
            let Json::Object(s) = st else {
                return Err(format!("statement {i} is not an object"));
            };
            for k in s.keys() {
                if ![
                    "Sid",
                    "Effect",
                    "Principal",
                    "NotPrincipal",
                    "Action",
                    "NotAction",
                    "Resource",
                    "NotResource",
                    "Condition",
                ]
                .contains(&k.as_str())
                {
                    return Err(format!("statement {i}: unknown element {k}"));
                }
            }
            let allow = match s.get("Effect").and_then(|e| e.as_str()) {
                Some("Allow") => true,
                Some("Deny") => false,
                _ => return Err(format!("statement {i}: Effect must be Allow or Deny")),
            };
            let principal = match (s.get("Principal"), s.get("NotPrincipal")) {
                _ if !g.principals && (s.contains_key("Principal") || s.contains_key("NotPrincipal")) => {
                    return Err(format!(
                        "statement {i}: an identity policy names no Principal (it applies to whoever it is attached to)"
                    ))
                }
                (None, None) if !g.principals => (vec!["*".to_string()], false),
                (Some(p), None) => (principals(p, i)?, false),
                (None, Some(p)) => (principals(p, i)?, true),
                (None, None) => return Err(format!("statement {i}: Principal is missing")),
                _ => {
                    return Err(format!(
                        "statement {i}: give Principal or NotPrincipal, not both"
                    ))
                }
            };
            let action = either(s, "Action", i)?;
            for a in &action.0 {
                let lower = a.to_ascii_lowercase();
                if !(a == "*" || g.actions.iter().any(|p| lower.starts_with(p))) {
                    return Err(format!(
                        "statement {i}: action \"{a}\" is not one of {} actions",
                        g.actions.join(", ")
                    ));
                }
            }
            let resource = either(s, "Resource", i)?;
            for r in &resource.0 {
                if !(r == "*" || g.resources.iter().any(|p| r.starts_with(p))) {
                    return Err(format!(
                        "statement {i}: resource \"{r}\" is not a {} ARN",
                        g.resources.join(" or ")
                    ));
                }
                if r.contains("${") {
                    return Err(format!(
                        "statement {i}: resource \"{r}\": policy variables are not evaluated here; name the resources"
                    ));
                }
            }
            let mut conditions = vec![];
            match s.get("Condition") {
                None => {}
                Some(Json::Object(ops)) => {
                    for (op, keys) in ops {
                        let base = op.strip_suffix("IfExists").unwrap_or(op);
                        if !CONDITION_OPERATORS.contains(&base) {
                            return Err(format!(
                                "statement {i}: condition operator {op} is not evaluated here (known: {})",
                                CONDITION_OPERATORS.join(", ")
                            ));
                        }
                        let Json::Object(keys) = keys else {
                            return Err(format!(
                                "statement {i}: {op} maps condition keys to values"
                            ));
                        };
                        for (key, vals) in keys {
                            if !g.keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                                return Err(format!(
                                    "statement {i}: condition key {key} is not evaluated here (known: {})",
                                    g.keys.join(", ")
                                ));
                            }
                            let vals = strings(vals)
                                .map_err(|e| format!("statement {i}: {op} {key}: {e}"))?;
                            for v in &vals {
                                check_value(base, v)
                                    .map_err(|e| format!("statement {i}: {op} {key}: {e}"))?;
                            }
                            conditions.push((op.clone(), key.clone(), vals));
                        }
                    }
                }
                Some(_) => {
                    return Err(format!(
                        "statement {i}: Condition maps operators to {{key: values}}"
                    ))
                }
            }
            out.push(Statement {
                allow,
                principal,
                action,
                resource,
                conditions,
            });
        }
        Ok(Policy { statements: out })
    }

    /// What this policy alone says: Deny if a Deny statement applies, else Allow if an
    /// Allow statement does.
    pub fn decide(&self, cx: &dyn Context, action: &str, resource: &str) -> Decision {
        let mut d = Decision::NotApplicable;
        for s in &self.statements {
            if !s.applies(cx, action, resource) {
                continue;
            }
            if !s.allow {
                return Decision::Deny;
            }
            d = Decision::Allow;
        }
        d
    }
}

impl Statement {
    fn applies(&self, cx: &dyn Context, action: &str, resource: &str) -> bool {
        let (names, not) = &self.principal;
        let who = names.iter().any(|n| principal_is(n, cx.principal()));
        if who == *not {
            return false;
        }
        let (acts, not) = &self.action;
        if acts.iter().any(|a| glob(a, action, true)) == *not {
            return false;
        }
        let (res, not) = &self.resource;
        if res.iter().any(|r| glob(r, resource, false)) == *not {
            return false;
        }
        self.conditions
            .iter()
            .all(|(op, key, vals)| condition(op, cx.key(&key.to_ascii_lowercase()), vals))
    }
}

fn principal_is(n: &str, user: Option<&str>) -> bool {
    if n == "*" {
        return true;
    }
    let Some(u) = user else { return false };
    match n.strip_prefix("arn:aws:iam:") {
        Some(rest) => match (rest.split_once(":user/"), rest.split_once(":role/")) {
            (Some((_, name)), _) => name == u,
            (None, Some((_, role))) => u.strip_prefix("role/") == Some(role),
            _ => false,
        },
        None => n == u,
    }
}

/// Checks a condition's value against what its operator compares.
fn check_value(op: &str, v: &str) -> Result<(), String> {
    if op.starts_with("Numeric") && v.parse::<f64>().is_err() {
        return Err(format!("{v:?} is not a number"));
    }
    if op.starts_with("Date") && date(v).is_none() {
        return Err(format!(
            "{v:?} is not a date (ISO 8601 like 2026-01-31T00:00:00Z, or epoch seconds)"
        ));
    }
    if (op == "Bool" || op == "Null") && v != "true" && v != "false" {
        return Err(format!("{v:?} is not true or false"));
    }
    if op.ends_with("IpAddress")
        && v.parse::<ipnet::IpNet>().is_err()
        && v.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("{v:?} is not an address or a CIDR range"));
    }
    Ok(())
}

fn date(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            time::Date::parse(v, time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
                .map(|d| d.midnight().assume_utc())
        })?;
    Some(t.unix_timestamp())
}

fn in_net(v: &str, ip: std::net::IpAddr) -> bool {
    match v.parse::<ipnet::IpNet>() {
        Ok(n) => n.contains(&ip),
        Err(_) => v.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip),
    }
}

/// One condition: `op` over the request's value of its key (`None`: absent) and the
/// policy's values (any of them matches; a negated operator matches none of them).
fn condition(op: &str, have: Option<String>, vals: &[String]) -> bool {
    let (base, if_exists) = match op.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (op, false),
    };
    if base == "Null" {
        // Null true: the key is absent.
        return vals.iter().any(|v| (v == "true") == have.is_none());
    }
    let negated = matches!(
        base,
        "StringNotEquals"
            | "StringNotEqualsIgnoreCase"
            | "StringNotLike"
            | "NumericNotEquals"
            | "DateNotEquals"
            | "NotIpAddress"
    );
    let Some(have) = have else {
        // An absent key: IfExists and negated operators hold, the others do not.
        return if_exists || negated;
    };
    let num = |s: &str| s.parse::<f64>().ok();
    let one = |v: &String| -> bool {
        match base {
            "StringEquals" | "StringNotEquals" => have == *v,
            "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" => have.eq_ignore_ascii_case(v),
            "StringLike" | "StringNotLike" => glob(v, &have, false),
            "Bool" => have.eq_ignore_ascii_case(v),
            "IpAddress" | "NotIpAddress" => have
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| in_net(v, ip)),
            b if b.starts_with("Numeric") => match (num(&have), num(v)) {
                (Some(a), Some(b2)) => compare(b.trim_start_matches("Numeric"), a, b2),
                _ => false,
            },
            b if b.starts_with("Date") => match (date(&have), date(v)) {
                (Some(a), Some(b2)) => compare(b.trim_start_matches("Date"), a as f64, b2 as f64),
                _ => false,
            },
            _ => false,
        }
    };
    if negated {
        !vals.iter().any(one)
    } else {
        vals.iter().any(one)
    }
}

fn compare(how: &str, a: f64, b: f64) -> bool {
    match how {
        "Equals" => a == b,
        "NotEquals" => a == b, // negation applied by the caller
        "LessThan" => a < b,
        "LessThanEquals" => a <= b,
        "GreaterThan" => a > b,
        "GreaterThanEquals" => a >= b,
        _ => false,
    }
}

/// `*` and `?` wildcards; actions compare case-insensitively, resources and values not.
/// Whether `v` matches `p` (`*` any run, `?` one character).
pub fn glob(p: &str, v: &str, case_insensitive: bool) -> bool {
    veeps_resource::wildcard(p, v, case_insensitive)
}

#[cfg(test)]
mod tests {
    //! AWS's evaluation rules, one row each: the policies in force, who asks with which
    //! condition values, for what, and the decision AWS documents.
    use super::*;

    const IDENTITY: Grammar = Grammar {
        actions: &["s3:", "veeps:"],
        resources: &["arn:aws:s3:::", "arn:veeps:"],
        keys: &[
            "aws:MultiFactorAuthPresent",
            "aws:SourceIp",
            "aws:CurrentTime",
            "aws:username",
        ],
        principals: false,
    };

    struct Cx {
        user: Option<&'static str>,
        keys: Vec<(&'static str, &'static str)>,
    }

    impl Context for Cx {
        fn principal(&self) -> Option<&str> {
            self.user
        }
        fn key(&self, key: &str) -> Option<String> {
            self.keys
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.to_string())
        }
    }

    fn decide(
        policies: &[&str],
        keys: &[(&'static str, &'static str)],
        action: &str,
        resource: &str,
    ) -> Decision {
        let parsed: Vec<Policy> = policies
            .iter()
            .map(|p| Policy::parse(p, &IDENTITY).unwrap_or_else(|e| panic!("{e}: {p}")))
            .collect();
        let refs: Vec<&Policy> = parsed.iter().collect();
        let cx = Cx {
            user: Some("alice"),
            keys: keys.to_vec(),
        };
        evaluate(&refs, &cx, action, resource)
    }

    const ALLOW_ALL_S3: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    const DENY_DELETE: &str = r#"{"Statement":[{"Effect":"Deny","Action":"s3:Delete*","Resource":"arn:aws:s3:::prod-*"}]}"#;
    const MFA_FOR_APPLY: &str = r#"{"Statement":[
        {"Effect":"Allow","Action":"veeps:*","Resource":"arn:veeps:*:stage:*"},
        {"Effect":"Allow","Action":"veeps:Apply","Resource":"arn:veeps:engine:prod:*",
         "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}"#;
    const NOT_ACTION: &str = r#"{"Statement":[{"Effect":"Deny","NotAction":["s3:Get*","s3:List*"],"Resource":"*",
        "Condition":{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#;
    const NOT_RESOURCE: &str = r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","NotResource":"arn:aws:s3:::secrets/*"}]}"#;

    /// Policies, condition values, action, resource, the decision, and why.
    type Row<'a> = (
        &'a [&'a str],
        &'a [(&'static str, &'static str)],
        &'a str,
        &'a str,
        Decision,
        &'a str,
    );

    #[test]
    fn aws_evaluation_rules() {
        use Decision::*;
        let rows: &[Row] = &[
            (
                &[],
                &[],
                "s3:GetObject",
                "arn:aws:s3:::a/x",
                NotApplicable,
                "nothing allows: implicit deny",
            ),
            (
                &[ALLOW_ALL_S3],
                &[],
                "s3:GetObject",
                "arn:aws:s3:::a/x",
                Allow,
                "an allow applies",
            ),
            (
                &[ALLOW_ALL_S3],
                &[],
                "veeps:Apply",
                "arn:veeps:engine:prod:env",
                NotApplicable,
                "another service's action",
            ),
            (
                &[ALLOW_ALL_S3, DENY_DELETE],
                &[],
                "s3:DeleteObject",
                "arn:aws:s3:::prod-db/x",
                Deny,
                "an explicit deny wins over an allow in another policy",
            ),
            (
                &[ALLOW_ALL_S3, DENY_DELETE],
                &[],
                "s3:DeleteObject",
                "arn:aws:s3:::stage-db/x",
                Allow,
                "the deny's resource does not match",
            ),
            (
                &[ALLOW_ALL_S3, DENY_DELETE],
                &[],
                "S3:deleteobject",
                "arn:aws:s3:::prod-db/x",
                Deny,
                "actions match case-insensitively",
            ),
            (
                &[ALLOW_ALL_S3, DENY_DELETE],
                &[],
                "s3:DeleteObject",
                "arn:aws:s3:::PROD-db/x",
                Allow,
                "resources match case-sensitively",
            ),
            (
                &[MFA_FOR_APPLY],
                &[],
                "veeps:Apply",
                "arn:veeps:engine:prod:env",
                NotApplicable,
                "an MFA-required action without MFA (key absent)",
            ),
            (
                &[MFA_FOR_APPLY],
                &[("aws:MultiFactorAuthPresent", "false")],
                "veeps:Apply",
                "arn:veeps:engine:prod:env",
                NotApplicable,
                "an MFA-required action without MFA",
            ),
            (
                &[MFA_FOR_APPLY],
                &[("aws:MultiFactorAuthPresent", "true")],
                "veeps:Apply",
                "arn:veeps:engine:prod:env",
                Allow,
                "with MFA",
            ),
            (
                &[MFA_FOR_APPLY],
                &[],
                "veeps:Apply",
                "arn:veeps:engine:stage:env",
                Allow,
                "stage needs no MFA",
            ),
            (
                &[ALLOW_ALL_S3, NOT_ACTION],
                &[("aws:SourceIp", "203.0.113.9")],
                "s3:PutObject",
                "arn:aws:s3:::a/x",
                Deny,
                "NotAction: writes from outside 10/8 are denied",
            ),
            (
                &[ALLOW_ALL_S3, NOT_ACTION],
                &[("aws:SourceIp", "203.0.113.9")],
                "s3:GetObject",
                "arn:aws:s3:::a/x",
                Allow,
                "NotAction: reads are not in the deny",
            ),
            (
                &[ALLOW_ALL_S3, NOT_ACTION],
                &[("aws:SourceIp", "10.1.2.3")],
                "s3:PutObject",
                "arn:aws:s3:::a/x",
                Allow,
                "NotIpAddress does not hold inside 10/8",
            ),
            (
                &[ALLOW_ALL_S3, NOT_ACTION],
                &[],
                "s3:PutObject",
                "arn:aws:s3:::a/x",
                Deny,
                "a negated operator holds when the key is absent",
            ),
            (
                &[NOT_RESOURCE],
                &[],
                "s3:GetObject",
                "arn:aws:s3:::public/x",
                Allow,
                "NotResource: everything but secrets",
            ),
            (
                &[NOT_RESOURCE],
                &[],
                "s3:GetObject",
                "arn:aws:s3:::secrets/x",
                NotApplicable,
                "NotResource: not secrets",
            ),
        ];
        for (policies, keys, action, resource, want, why) in rows {
            assert_eq!(decide(policies, keys, action, resource), *want, "{why}");
        }
    }

    #[test]
    fn what_a_grammar_does_not_know_is_refused_with_the_reason() {
        for (p, says) in [
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}]}"#,
                "names no Principal",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"ec2:RunInstances","Resource":"*"}]}"#,
                "is not one of",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:ec2:::x"}]}"#,
                "is not a",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/team":"x"}}}]}"#,
                "not evaluated here",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:username":"x"}}}]}"#,
                "not evaluated here",
            ),
            (
                r#"{"Statement":[{"Effect":"Perhaps","Action":"s3:*","Resource":"*"}]}"#,
                "Allow or Deny",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","NotAction":"s3:Get*","Resource":"*"}]}"#,
                "not both",
            ),
        ] {
            let e = Policy::parse(p, &IDENTITY).unwrap_err();
            assert!(e.contains(says), "{e} (wanted: {says})");
        }
    }
}
