//! Expression evaluation with unknown values, and static reference collection.

use crate::diag::{Diagnostic, Loc, SourceFile};
use crate::funcs;
use crate::number::{Number, NumberError};
use crate::value::Value;
use hcl_edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Directive, Element, Template};
use hcl_edit::Span;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An expression together with the file it came from, so errors can name `file:line:col`.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The parsed expression.
    pub expr: Expression,
    /// Its source file.
    pub file: Arc<SourceFile>,
}

impl Expr {
    /// Whether its value is a set, which veeps holds as an ordered list: a call to a
    /// function that makes sets, or a variable declared `set(...)`.
    pub fn makes_set(&self, scope: &dyn Scope) -> bool {
        match &self.expr {
            Expression::FuncCall(f) => matches!(
                f.name.name.as_str(),
                "toset" | "setunion" | "setintersection" | "setsubtract" | "setproduct" | "fileset"
            ),
            Expression::Traversal(t) => match (&t.expr, t.operators.as_slice()) {
                (Expression::Variable(v), [op]) if v.as_str() == "var" => match op.value() {
                    TraversalOperator::GetAttr(n) => {
                        matches!(scope.var_type(n.as_str()), Some(crate::value::Type::Set(_)))
                    }
                    _ => false,
                },
                _ => false,
            },
            Expression::Parenthesis(p) => Expr {
                expr: p.inner().clone(),
                file: self.file.clone(),
            }
            .makes_set(scope),
            _ => false,
        }
    }

    /// Where the expression is.
    pub fn loc(&self) -> Loc {
        Loc::new(&self.file, self.expr.span())
    }

    /// The location of a sub-expression of this one.
    pub fn sub_loc(&self, e: &Expression) -> Loc {
        Loc::new(&self.file, e.span())
    }

    /// The references this expression makes (`var.x`, `aws_thing.name`, ...).
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        collect_refs(&self.expr, &self.file, &mut Vec::new(), &mut out);
        out
    }

    /// The source text of the expression.
    pub fn text(&self) -> &str {
        let span = self.expr.span().unwrap_or(0..0);
        self.file.text.get(span).unwrap_or("")
    }
}

/// A static reference: a root name followed by attribute names, as written.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `var`, `local`, `module`, `data`, `count`, `each`, `path`, or a resource type.
    pub root: String,
    /// The attribute names that directly follow the root (`var.x` gives `["x"]`).
    pub names: Vec<String>,
    /// Where the reference is written.
    pub loc: Loc,
    /// Inside `nonsensitive(...)` or `issensitive(...)`, whose results are not sensitive
    /// whatever their arguments are.
    pub unmarked: bool,
}

/// Resolves the names an expression refers to.
pub trait Scope {
    /// Resolves `root` followed by the attribute names `names`. Returns the value and how many of
    /// `names` it consumed (for example `var` consumes one: `var.x`).
    fn resolve(&self, root: &str, names: &[&str], loc: &Loc) -> Result<(Value, usize), Diagnostic>;

    /// Reads a file of the configuration for `file()` (paths as `path.module` builds them).
    fn read_file(&self, path: &str) -> Option<String>;

    /// The configuration's bundle, for `fileset()`, `abspath()` and `pathexpand()`.
    fn bundle(&self) -> Option<&crate::config::Bundle> {
        None
    }

    /// Whether values that exist only once apply runs (`timestamp()`, `uuid()`) are
    /// known: during a plan they are unknown, as in Terraform.
    fn applying(&self) -> bool {
        true
    }

    /// The declared type of input variable `name`, if the scope has one.
    fn var_type(&self, _name: &str) -> Option<crate::value::Type> {
        None
    }

    /// The time of the plan being made or applied, for `plantimestamp()`.
    fn plan_time(&self) -> Option<&str> {
        None
    }

    /// Whether an expression's value derives from a sensitive one (a sensitive variable,
    /// a resource's sensitive attribute, a sensitive module output), for `issensitive()`.
    fn is_sensitive(&self, _e: &Expr) -> bool {
        false
    }
}

/// A scope with no references at all: constant expressions only.
pub struct EmptyScope;

impl Scope for EmptyScope {
    fn resolve(
        &self,
        root: &str,
        _names: &[&str],
        loc: &Loc,
    ) -> Result<(Value, usize), Diagnostic> {
        Err(Diagnostic::at(
            loc,
            format!("variables are not allowed here (found a reference to \"{root}\")"),
        )
        .with_detail("Use a literal value."))
    }
    fn read_file(&self, _path: &str) -> Option<String> {
        None
    }
}

/// Evaluates expressions against a scope.
pub struct Evaluator<'a> {
    scope: &'a dyn Scope,
    file: Arc<SourceFile>,
    locals: Vec<(String, Value)>,
    /// A heredoc's literals as HCL reads them (by the address of their element), while
    /// one is evaluated: see [`heredoc_literals`].
    heredoc: Option<std::collections::HashMap<usize, String>>,
    /// `for` iterations so far (bounded by [`MAX_STEPS`]).
    steps: usize,
}

/// Iterations of `for` expressions one evaluation may take (nested ones count each inner
/// step): past it, the expression is an error rather than a server out of memory or time.
pub const MAX_STEPS: usize = 1_000_000;

/// The longest string a template may produce (16 MiB).
pub const MAX_STRING: usize = 16 << 20;

/// Evaluates `e` in `scope`.
pub fn eval(e: &Expr, scope: &dyn Scope) -> Result<Value, Diagnostic> {
    let mut ev = Evaluator {
        scope,
        file: e.file.clone(),
        locals: Vec::new(),
        steps: 0,
        heredoc: None,
    };
    ev.expr(&e.expr)
}

/// Evaluates a template string (as `templatefile` does) with the given variables.
pub fn eval_template_text(
    text: &str,
    path: &str,
    vars: BTreeMap<String, Value>,
    scope: &dyn Scope,
) -> Result<Value, Diagnostic> {
    let file = Arc::new(SourceFile {
        path: path.to_string(),
        text: text.to_string(),
    });
    let tpl = hcl_edit::parser::parse_template(text)
        .map_err(|e| crate::config::parse_error(&file, &e))?;
    let mut ev = Evaluator {
        scope,
        file,
        locals: vars.into_iter().collect(),
        steps: 0,
        heredoc: None,
    };
    ev.template(&tpl)
}

impl Evaluator<'_> {
    fn loc(&self, e: &Expression) -> Loc {
        Loc::new(&self.file, e.span())
    }

    fn err(&self, e: &Expression, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.loc(e), msg)
    }

    fn expr(&mut self, e: &Expression) -> Result<Value, Diagnostic> {
        Ok(match e {
            Expression::Null(_) => Value::Null,
            Expression::Bool(b) => Value::Bool(*b.value()),
            Expression::Number(n) => {
                // The literal as written, read at 512 bits as Terraform reads it.
                let written = n
                    .span()
                    .and_then(|sp| self.file.text.get(sp))
                    .map(str::to_string)
                    .unwrap_or_else(|| n.value().to_string());
                match Number::parse(written.trim()) {
                    Ok(v) => Value::Number(v),
                    Err(err) => return Err(self.err(e, format!("the number {written}: {err}"))),
                }
            }
            // Strings are NFC-normalized, as Terraform's are: "e\u0301" is "é".
            Expression::String(s) => Value::String(nfc(s.value())),
            Expression::Array(a) => {
                let mut out = Vec::new();
                for item in a.iter() {
                    out.push(self.expr(item)?);
                }
                Value::List(out)
            }
            Expression::Object(o) => {
                let mut out = BTreeMap::new();
                let mut unknown = false;
                for (k, v) in o.iter() {
                    let key = match k {
                        ObjectKey::Ident(i) => i.as_str().to_string(),
                        ObjectKey::Expression(ke) => match self.expr(ke)? {
                            Value::Unknown => {
                                unknown = true;
                                continue;
                            }
                            kv => kv.to_template_string().ok_or_else(|| {
                                self.err(
                                    ke,
                                    format!(
                                        "an object key must be a string, got {}",
                                        kv.type_name()
                                    ),
                                )
                            })?,
                        },
                    };
                    let val = self.expr(v.expr())?;
                    out.insert(key, val);
                }
                if unknown {
                    Value::Unknown
                } else {
                    Value::Object(out)
                }
            }
            // A template that is one interpolation and nothing else is that value, not a
            // string of it ("${var.list}" is the list), as in Terraform.
            Expression::StringTemplate(t) => match t.iter().collect::<Vec<_>>().as_slice() {
                [Element::Interpolation(ip)] => self.expr(&ip.expr)?,
                _ => self.template_within(t, false, false, true, false)?,
            },
            Expression::HeredocTemplate(h) => {
                let lits = heredoc_literals(h, &self.file.text);
                let outer = std::mem::replace(&mut self.heredoc, lits);
                let v = self.template(&h.template);
                self.heredoc = outer;
                v?
            }
            Expression::Parenthesis(p) => self.expr(p.inner())?,
            Expression::Variable(v) => self.traversal(e, v.as_str(), &[])?,
            Expression::Traversal(t) => match &t.expr {
                Expression::Variable(v) => self.traversal(e, v.as_str(), &t.operators)?,
                inner => {
                    let base = self.expr(inner)?;
                    self.apply_ops(e, base, &t.operators)?
                }
            },
            Expression::Conditional(c) => {
                let cond = self.expr(&c.cond_expr)?;
                let pick = match cond {
                    Value::Unknown => return Ok(Value::Unknown),
                    Value::Bool(b) => b,
                    Value::String(s) if s == "true" || s == "false" => s == "true",
                    other => {
                        return Err(self.err(
                            &c.cond_expr,
                            format!("the condition must be a bool, got {}", other.type_name()),
                        ))
                    }
                };
                let (chosen, other) = if pick {
                    (&c.true_expr, &c.false_expr)
                } else {
                    (&c.false_expr, &c.true_expr)
                };
                let v = self.expr(chosen)?;
                // The result's type is both results' common type, as Terraform's: `true ? 1
                // : "a"` is "1". The other result's errors do not count (it is not chosen).
                match self.expr(other) {
                    Ok(o) => match crate::value::unify(&[&v, &o]) {
                        Ok(Some(t)) => crate::value::convert(&v, &t)
                            .map_err(|e| self.err(chosen, e))?,
                        Ok(None) => v,
                        Err(_) => {
                            return Err(self.err(
                                chosen,
                                format!(
                                    "inconsistent conditional result types: {} and {} have no common type",
                                    v.type_name(),
                                    o.type_name()
                                ),
                            ))
                        }
                    },
                    Err(_) => v,
                }
            }
            Expression::UnaryOp(op) => {
                let v = self.expr(&op.expr)?;
                match (op.operator.value(), v) {
                    (_, Value::Unknown) => Value::Unknown,
                    (UnaryOperator::Neg, Value::Number(n)) => Value::Number(n.neg()),
                    (UnaryOperator::Not, Value::Bool(b)) => Value::Bool(!b),
                    (o, v) => {
                        return Err(self.err(
                            e,
                            format!(
                                "operator \"{}\" cannot be applied to {}",
                                o.as_str(),
                                v.type_name()
                            ),
                        ))
                    }
                }
            }
            Expression::BinaryOp(op) => self.binary(e, op)?,
            Expression::ForExpr(f) => self.for_expr(e, f)?,
            Expression::FuncCall(call) => self.call(e, call)?,
        })
    }

    fn binary(
        &mut self,
        e: &Expression,
        op: &hcl_edit::expr::BinaryOp,
    ) -> Result<Value, Diagnostic> {
        let o = *op.operator.value();
        let l = self.expr(&op.lhs_expr)?;
        // Short-circuit logic operators on known values.
        match (o, &l) {
            (BinaryOperator::And, Value::Bool(false)) => return Ok(Value::Bool(false)),
            (BinaryOperator::Or, Value::Bool(true)) => return Ok(Value::Bool(true)),
            _ => {}
        }
        let r = self.expr(&op.rhs_expr)?;
        if l.has_unknown() || r.has_unknown() {
            return Ok(Value::Unknown);
        }
        use BinaryOperator::*;
        Ok(match o {
            Eq => Value::Bool(values_equal(&l, &r)),
            NotEq => Value::Bool(!values_equal(&l, &r)),
            And | Or => {
                let lb = self.to_bool(&op.lhs_expr, &l)?;
                let rb = self.to_bool(&op.rhs_expr, &r)?;
                Value::Bool(if o == And { lb && rb } else { lb || rb })
            }
            _ => {
                let a = self.to_number(&op.lhs_expr, &l)?;
                let b = self.to_number(&op.rhs_expr, &r)?;
                let done = |r: Result<Number, NumberError>| {
                    r.map(Value::Number).map_err(|err| match err {
                        NumberError::Undefined => self.err(e, "the result is not a number (zero divided by zero, or infinity less infinity)"),
                        err => self.err(e, err.to_string()),
                    })
                };
                match o {
                    Plus => done(a.add(&b))?,
                    Minus => done(a.sub(&b))?,
                    Mul => done(a.mul(&b))?,
                    Div => done(a.div(&b))?,
                    Mod => done(a.rem(&b))?,
                    Less => Value::Bool(a < b),
                    LessEq => Value::Bool(a <= b),
                    Greater => Value::Bool(a > b),
                    GreaterEq => Value::Bool(a >= b),
                    _ => unreachable!("handled above"),
                }
            }
        })
    }

    fn to_number(&self, e: &Expression, v: &Value) -> Result<Number, Diagnostic> {
        match v {
            Value::Number(n) => Ok(n.clone()),
            Value::String(s) => Number::parse(s).map_err(|_| {
                self.err(
                    e,
                    format!("a number is required, but \"{s}\" is not a number"),
                )
            }),
            v => Err(self.err(e, format!("a number is required, got {}", v.type_name()))),
        }
    }

    fn to_bool(&self, e: &Expression, v: &Value) -> Result<bool, Diagnostic> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            v => Err(self.err(e, format!("a bool is required, got {}", v.type_name()))),
        }
    }

    fn traversal(
        &mut self,
        whole: &Expression,
        root: &str,
        ops: &[hcl_edit::Decorated<TraversalOperator>],
    ) -> Result<Value, Diagnostic> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == root) {
            let v = v.clone();
            return self.apply_ops(whole, v, ops);
        }
        let names: Vec<&str> = ops
            .iter()
            .take(3)
            .map_while(|o| match o.value() {
                TraversalOperator::GetAttr(i) => Some(i.as_str()),
                _ => None,
            })
            .collect();
        let loc = self.loc(whole);
        let (v, used) = self.scope.resolve(root, &names, &loc)?;
        self.apply_ops(whole, v, &ops[used..])
    }

    fn apply_ops(
        &mut self,
        whole: &Expression,
        mut v: Value,
        ops: &[hcl_edit::Decorated<TraversalOperator>],
    ) -> Result<Value, Diagnostic> {
        let mut i = 0;
        while i < ops.len() {
            let op = ops[i].value();
            match op {
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    let rest = &ops[i + 1..];
                    let items = match v {
                        Value::Unknown => return Ok(Value::Unknown),
                        Value::Null => vec![],
                        Value::List(l) => l,
                        other => vec![other],
                    };
                    let mut out = Vec::new();
                    for item in items {
                        out.push(self.apply_ops(whole, item, rest)?);
                    }
                    return Ok(Value::List(out));
                }
                TraversalOperator::GetAttr(name) => {
                    v = match v {
                        Value::Unknown => return Ok(Value::Unknown),
                        Value::Object(mut o) => match o.remove(name.as_str()) {
                            Some(x) => x,
                            None => {
                                let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                                return Err(self.err(
                                    whole,
                                    format!(
                                        "this object has no attribute \"{}\".{}",
                                        name.as_str(),
                                        crate::diag::did_you_mean(name.as_str(), keys)
                                    ),
                                ));
                            }
                        },
                        Value::Null => {
                            return Err(self.err(
                                whole,
                                format!(
                                    "attempt to get attribute \"{}\" from a null value",
                                    name.as_str()
                                ),
                            ))
                        }
                        other => {
                            return Err(self.err(
                                whole,
                                format!(
                                    "cannot get attribute \"{}\" of a {}",
                                    name.as_str(),
                                    other.type_name()
                                ),
                            ))
                        }
                    }
                }
                TraversalOperator::Index(ie) => {
                    let key = self.expr(ie)?;
                    v = self.index(whole, v, &key)?;
                }
                TraversalOperator::LegacyIndex(n) => {
                    v = self.index(whole, v, &Value::from(*n.value() as i64))?;
                }
            }
            i += 1;
        }
        Ok(v)
    }

    fn index(&self, whole: &Expression, v: Value, key: &Value) -> Result<Value, Diagnostic> {
        if v.is_unknown() || key.is_unknown() {
            return Ok(Value::Unknown);
        }
        match v {
            Value::List(mut l) => {
                let n = match key {
                    Value::Number(n) => n.clone(),
                    Value::String(s) => Number::parse(s).map_err(|_| {
                        self.err(whole, format!("a list index must be a number, got \"{s}\""))
                    })?,
                    k => {
                        return Err(self.err(
                            whole,
                            format!("a list index must be a number, got {}", k.type_name()),
                        ))
                    }
                };
                let at = n
                    .is_integer()
                    .then(|| n.to_i64())
                    .flatten()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < l.len());
                let Some(at) = at else {
                    return Err(self.err(
                        whole,
                        format!(
                            "index {} is out of range for a list of {} elements",
                            n.text(),
                            l.len()
                        ),
                    ));
                };
                Ok(l.swap_remove(at))
            }
            Value::Object(mut o) => {
                let k = key.to_template_string().ok_or_else(|| {
                    self.err(
                        whole,
                        format!("a map key must be a string, got {}", key.type_name()),
                    )
                })?;
                match o.remove(&k) {
                    Some(x) => Ok(x),
                    None => {
                        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                        Err(self.err(
                            whole,
                            format!(
                                "the map has no element \"{k}\".{}",
                                crate::diag::did_you_mean(&k, keys)
                            ),
                        ))
                    }
                }
            }
            Value::Null => Err(self.err(whole, "cannot index a null value")),
            other => Err(self.err(whole, format!("cannot index a {}", other.type_name()))),
        }
    }

    fn for_expr(
        &mut self,
        e: &Expression,
        f: &hcl_edit::expr::ForExpr,
    ) -> Result<Value, Diagnostic> {
        let coll = self.expr(&f.intro.collection_expr)?;
        let items: Vec<(Value, Value)> = match coll {
            Value::Unknown => return Ok(Value::Unknown),
            Value::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i as i64), v))
                .collect(),
            Value::Object(o) => o.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            Value::Null => {
                return Err(self.err(&f.intro.collection_expr, "cannot iterate over a null value"))
            }
            other => {
                return Err(self.err(
                    &f.intro.collection_expr,
                    format!("cannot iterate over a {}", other.type_name()),
                ))
            }
        };
        let kname = f.intro.key_var.as_ref().map(|k| k.as_str().to_string());
        let vname = f.intro.value_var.as_str().to_string();
        let mut list = Vec::new();
        let mut obj: BTreeMap<String, Value> = BTreeMap::new();
        let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut unknown = false;
        for (k, v) in items {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(self.err(
                    e,
                    format!("this expression takes more than {MAX_STEPS} steps of for; iterate over less"),
                ));
            }
            let depth = self.locals.len();
            if let Some(kn) = &kname {
                self.locals.push((kn.clone(), k));
            }
            self.locals.push((vname.clone(), v));
            let res = (|| -> Result<(), Diagnostic> {
                if let Some(cond) = &f.cond {
                    match self.expr(&cond.expr)? {
                        Value::Bool(true) => {}
                        Value::Bool(false) => return Ok(()),
                        Value::Unknown => {
                            unknown = true;
                            return Ok(());
                        }
                        o => {
                            return Err(self.err(
                                &cond.expr,
                                format!("the condition must be a bool, got {}", o.type_name()),
                            ))
                        }
                    }
                }
                let val = self.expr(&f.value_expr)?;
                match &f.key_expr {
                    Some(ke) => {
                        let key = self.expr(ke)?;
                        if key.is_unknown() {
                            unknown = true;
                            return Ok(());
                        }
                        let key = key
                            .to_template_string()
                            .ok_or_else(|| self.err(ke, "an object key must be a string"))?;
                        if f.grouping {
                            grouped.entry(key).or_default().push(val);
                        } else {
                            match obj.entry(key) {
                                std::collections::btree_map::Entry::Occupied(o) => {
                                    return Err(self.err(ke, format!("duplicate object key \"{}\"; add \"...\" after the value to group values by key", o.key())));
                                }
                                std::collections::btree_map::Entry::Vacant(slot) => {
                                    slot.insert(val);
                                }
                            }
                        }
                    }
                    None => list.push(val),
                }
                Ok(())
            })();
            self.locals.truncate(depth);
            res?;
        }
        let _ = e;
        if unknown {
            return Ok(Value::Unknown);
        }
        Ok(match &f.key_expr {
            Some(_) if f.grouping => Value::Object(
                grouped
                    .into_iter()
                    .map(|(k, v)| (k, Value::List(v)))
                    .collect(),
            ),
            Some(_) => Value::Object(obj),
            None => Value::List(list),
        })
    }

    fn call(
        &mut self,
        e: &Expression,
        call: &hcl_edit::expr::FuncCall,
    ) -> Result<Value, Diagnostic> {
        let name = call.name.name.as_str();
        // `core::NAME` is the built-in NAME (Terraform 1.8's namespaced functions); other
        // namespaces are providers' functions, which veeps has none of.
        let core = call.name.namespace.len() == 1 && call.name.namespace[0].as_str() == "core";
        if !call.name.namespace.is_empty() && !core {
            return Err(self.err(
                e,
                format!(
                    "unknown function \"{}\": veeps has no providers' functions (core::NAME is the built-in NAME)",
                    call.name
                        .namespace
                        .iter()
                        .map(|n| n.as_str())
                        .chain([name])
                        .collect::<Vec<_>>()
                        .join("::")
                ),
            ));
        }
        // Lazily evaluated functions.
        match name {
            "try" => {
                // A misspelt function is the configuration's error, not one to try past
                // (Terraform finds it before evaluating anything).
                unknown_calls(e)
                    .map_err(|name| self.err(e, format!("call to unknown function \"{name}\"")))?;
                let mut last = None;
                for a in call.args.iter() {
                    match self.expr(a) {
                        Ok(v) => return Ok(v),
                        Err(err) => last = Some(err),
                    }
                }
                return Err(match last {
                    Some(l) => Diagnostic::at(
                        &self.loc(e),
                        format!(
                            "no argument of try() succeeded; the last failed with: {}",
                            l.summary
                        ),
                    ),
                    None => self.err(e, "try() needs at least one argument"),
                });
            }
            "templatestring"
                if matches!(
                    call.args.iter().next(),
                    Some(
                        Expression::String(_)
                            | Expression::StringTemplate(_)
                            | Expression::HeredocTemplate(_)
                    )
                ) =>
            {
                return Err(self.err(
                    e,
                    "templatestring() renders a template held elsewhere (a variable, a local, a file's content); for a literal one, write a template string instead",
                ));
            }
            "issensitive" => {
                let [a] = call.args.iter().collect::<Vec<_>>()[..] else {
                    return Err(self.err(e, "issensitive() needs one argument"));
                };
                self.expr(a)?;
                return Ok(Value::Bool(self.sensitive_expr(a)));
            }
            "can" => {
                let a = call
                    .args
                    .iter()
                    .next()
                    .ok_or_else(|| self.err(e, "can() needs one argument"))?;
                unknown_calls(e)
                    .map_err(|name| self.err(e, format!("call to unknown function \"{name}\"")))?;
                return Ok(match self.expr(a) {
                    Ok(Value::Unknown) => Value::Unknown,
                    Ok(_) => Value::Bool(true),
                    Err(_) => Value::Bool(false),
                });
            }
            _ => {}
        }
        let mut args = Vec::new();
        let n = call.args.len();
        for (i, a) in call.args.iter().enumerate() {
            let v = self.expr(a)?;
            if i + 1 == n && call.args.expand_final() {
                match v {
                    Value::List(l) => args.extend(l),
                    Value::Unknown => return Ok(Value::Unknown),
                    other => {
                        return Err(self.err(
                            a,
                            format!(
                                "only a list can be expanded with \"...\", got {}",
                                other.type_name()
                            ),
                        ))
                    }
                }
            } else {
                args.push(v);
            }
        }
        let arg_locs: Vec<Loc> = call.args.iter().map(|a| self.loc(a)).collect();
        let loc = self.loc(e);
        let ctx = funcs::CallCtx {
            loc: &loc,
            arg_locs: &arg_locs,
            scope: self.scope,
        };
        funcs::call(name, args, &ctx)
    }

    /// Whether a value is marked sensitive, as Terraform marks values: made by
    /// `sensitive()` (and not `nonsensitive()`), or read from a sensitive variable.
    fn sensitive_expr(&self, a: &Expression) -> bool {
        match a {
            Expression::FuncCall(f) if f.name.name.as_str() == "nonsensitive" => false,
            Expression::FuncCall(f) if f.name.name.as_str() == "sensitive" => true,
            Expression::Parenthesis(p) => self.sensitive_expr(p.inner()),
            _ => {
                let x = Expr {
                    expr: a.clone(),
                    file: self.file.clone(),
                };
                x.text().contains("kmscrypt::")
                    || self.scope.is_sensitive(&x)
                    || calls_sensitive(&x.expr)
            }
        }
    }

    fn template(&mut self, t: &Template) -> Result<Value, Diagnostic> {
        self.template_within(t, false, false, false, false)
    }

    /// A template whose first literal loses its leading whitespace (`strip_first`: the
    /// directive opening it ends with `~}`) and whose last loses its trailing whitespace
    /// (`strip_last`: the directive closing it starts with `%{~`). In a quoted string
    /// (`quoted`), the literals of directives' bodies (`nested`) still hold their escape
    /// sequences as written: they are decoded here.
    fn template_within(
        &mut self,
        t: &Template,
        strip_first: bool,
        strip_last: bool,
        quoted: bool,
        nested: bool,
    ) -> Result<Value, Diagnostic> {
        let mut out = String::new();
        let mut unknown = false;
        let elems: Vec<&Element> = t.iter().collect();
        let mut strip_next = strip_first;
        for (i, el) in elems.iter().enumerate() {
            let strip_after_this = match elems.get(i + 1) {
                Some(Element::Interpolation(ip)) => ip.strip.strip_start(),
                Some(Element::Directive(d)) => match d.as_ref() {
                    Directive::If(x) => x.if_expr.strip.strip_start(),
                    Directive::For(x) => x.for_expr.strip.strip_start(),
                },
                Some(_) => false,
                None => strip_last,
            };
            match el {
                Element::Literal(lit)
                    if self
                        .heredoc
                        .as_ref()
                        .is_some_and(|h| h.contains_key(&(&**lit as *const String as usize))) =>
                {
                    let h = self.heredoc.as_ref().expect("checked");
                    out.push_str(&h[&(&**lit as *const String as usize)]);
                    strip_next = false;
                }
                Element::Literal(s) => {
                    let decoded;
                    let mut s: &str = s.as_str();
                    if quoted && nested {
                        decoded = unescape(s);
                        s = decoded.as_str();
                    }
                    if strip_next {
                        s = s.trim_start();
                    }
                    if strip_after_this {
                        s = s.trim_end();
                    }
                    out.push_str(s);
                    strip_next = false;
                }
                Element::Interpolation(ip) => {
                    if out.len() > MAX_STRING {
                        return Err(self.err(
                            &ip.expr,
                            format!("this string grows past {MAX_STRING} bytes"),
                        ));
                    }
                    let v = self.expr(&ip.expr)?;
                    match v {
                        Value::Unknown => unknown = true,
                        Value::Null => return Err(self.err(&ip.expr, "cannot include a null value in a string template")),
                        v => match v.to_template_string() {
                            Some(s) => out.push_str(&s),
                            None => return Err(self.err(&ip.expr, format!("cannot include a {} in a string template; use jsonencode() or join()", v.type_name()))),
                        },
                    }
                    strip_next = ip.strip.strip_end();
                }
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(dir) => {
                        let c = self.expr(&dir.if_expr.cond_expr)?;
                        // "true" and "false" are bools here, as anywhere a bool is wanted.
                        let c = match c {
                            Value::String(_) => {
                                crate::value::convert(&c, &crate::value::Type::Bool).unwrap_or(c)
                            }
                            c => c,
                        };
                        let endif_start = dir.endif_expr.strip.strip_start();
                        let branch = match c {
                            Value::Unknown => {
                                unknown = true;
                                None
                            }
                            Value::Bool(true) => Some((
                                &dir.if_expr.template,
                                dir.if_expr.strip.strip_end(),
                                dir.else_expr
                                    .as_ref()
                                    .map(|e| e.strip.strip_start())
                                    .unwrap_or(endif_start),
                            )),
                            Value::Bool(false) => dir
                                .else_expr
                                .as_ref()
                                .map(|e| (&e.template, e.strip.strip_end(), endif_start)),
                            o => {
                                return Err(self.err(
                                    &dir.if_expr.cond_expr,
                                    format!("the condition must be a bool, got {}", o.type_name()),
                                ))
                            }
                        };
                        if let Some((b, first, last)) = branch {
                            match self.template_within(b, first, last, quoted, true)? {
                                Value::String(s) => out.push_str(&s),
                                _ => unknown = true,
                            }
                        }
                        strip_next = dir.endif_expr.strip.strip_end();
                    }
                    Directive::For(dir) => {
                        let f = &dir.for_expr;
                        let coll = self.expr(&f.collection_expr)?;
                        let items: Vec<(Value, Value)> = match coll {
                            Value::Unknown => {
                                unknown = true;
                                vec![]
                            }
                            Value::List(l) => l
                                .into_iter()
                                .enumerate()
                                .map(|(i, v)| (Value::from(i as i64), v))
                                .collect(),
                            Value::Object(o) => {
                                o.into_iter().map(|(k, v)| (Value::String(k), v)).collect()
                            }
                            o => {
                                return Err(self.err(
                                    &f.collection_expr,
                                    format!("cannot iterate over a {}", o.type_name()),
                                ))
                            }
                        };
                        for (k, v) in items {
                            let depth = self.locals.len();
                            if let Some(kv) = &f.key_var {
                                self.locals.push((kv.as_str().to_string(), k));
                            }
                            self.locals.push((f.value_var.as_str().to_string(), v));
                            let r = self.template_within(
                                &f.template,
                                f.strip.strip_end(),
                                dir.endfor_expr.strip.strip_start(),
                                quoted,
                                true,
                            );
                            self.locals.truncate(depth);
                            match r? {
                                Value::String(s) => out.push_str(&s),
                                _ => unknown = true,
                            }
                        }
                        strip_next = dir.endfor_expr.strip.strip_end();
                    }
                },
            }
        }
        Ok(if unknown {
            Value::Unknown
        } else {
            Value::String(nfc(&out))
        })
    }
}

/// Equality as the language defines it (numbers by value, collections element-wise).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    a == b
}

fn collect_refs(
    e: &Expression,
    file: &Arc<SourceFile>,
    bound: &mut Vec<String>,
    out: &mut Vec<Reference>,
) {
    let push = |root: &str,
                ops: &[hcl_edit::Decorated<TraversalOperator>],
                span: Option<std::ops::Range<usize>>,
                bound: &Vec<String>,
                out: &mut Vec<Reference>| {
        if bound.iter().any(|b| b == root) {
            return;
        }
        let names = ops
            .iter()
            .take(3)
            .map_while(|o| match o.value() {
                TraversalOperator::GetAttr(i) => Some(i.as_str().to_string()),
                TraversalOperator::Index(Expression::String(s)) => Some(s.value().clone()),
                _ => None,
            })
            .collect();
        out.push(Reference {
            root: root.to_string(),
            names,
            loc: Loc::new(file, span),
            unmarked: false,
        });
    };
    match e {
        Expression::Null(_)
        | Expression::Bool(_)
        | Expression::Number(_)
        | Expression::String(_) => {}
        Expression::Array(a) => a.iter().for_each(|x| collect_refs(x, file, bound, out)),
        Expression::Object(o) => {
            for (k, v) in o.iter() {
                if let ObjectKey::Expression(ke) = k {
                    collect_refs(ke, file, bound, out);
                }
                collect_refs(v.expr(), file, bound, out);
            }
        }
        Expression::StringTemplate(t) => template_refs(t, file, bound, out),
        Expression::HeredocTemplate(h) => template_refs(&h.template, file, bound, out),
        Expression::Parenthesis(p) => collect_refs(p.inner(), file, bound, out),
        Expression::Variable(v) => push(v.as_str(), &[], e.span(), bound, out),
        Expression::Traversal(t) => {
            match &t.expr {
                Expression::Variable(v) => push(v.as_str(), &t.operators, e.span(), bound, out),
                inner => collect_refs(inner, file, bound, out),
            }
            for op in &t.operators {
                if let TraversalOperator::Index(ie) = op.value() {
                    collect_refs(ie, file, bound, out);
                }
            }
        }
        Expression::Conditional(c) => {
            collect_refs(&c.cond_expr, file, bound, out);
            collect_refs(&c.true_expr, file, bound, out);
            collect_refs(&c.false_expr, file, bound, out);
        }
        Expression::FuncCall(f) => {
            let from = out.len();
            f.args
                .iter()
                .for_each(|a| collect_refs(a, file, bound, out));
            if matches!(f.name.name.as_str(), "nonsensitive" | "issensitive") {
                out[from..].iter_mut().for_each(|r| r.unmarked = true);
            }
        }
        Expression::UnaryOp(u) => collect_refs(&u.expr, file, bound, out),
        Expression::BinaryOp(b) => {
            collect_refs(&b.lhs_expr, file, bound, out);
            collect_refs(&b.rhs_expr, file, bound, out);
        }
        Expression::ForExpr(f) => {
            collect_refs(&f.intro.collection_expr, file, bound, out);
            let depth = bound.len();
            if let Some(k) = &f.intro.key_var {
                bound.push(k.as_str().to_string());
            }
            bound.push(f.intro.value_var.as_str().to_string());
            if let Some(k) = &f.key_expr {
                collect_refs(k, file, bound, out);
            }
            collect_refs(&f.value_expr, file, bound, out);
            if let Some(c) = &f.cond {
                collect_refs(&c.expr, file, bound, out);
            }
            bound.truncate(depth);
        }
    }
}

fn template_refs(
    t: &Template,
    file: &Arc<SourceFile>,
    bound: &mut Vec<String>,
    out: &mut Vec<Reference>,
) {
    for el in t.iter() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => collect_refs(&i.expr, file, bound, out),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(x) => {
                    collect_refs(&x.if_expr.cond_expr, file, bound, out);
                    template_refs(&x.if_expr.template, file, bound, out);
                    if let Some(e) = &x.else_expr {
                        template_refs(&e.template, file, bound, out);
                    }
                }
                Directive::For(x) => {
                    collect_refs(&x.for_expr.collection_expr, file, bound, out);
                    let depth = bound.len();
                    if let Some(k) = &x.for_expr.key_var {
                        bound.push(k.as_str().to_string());
                    }
                    bound.push(x.for_expr.value_var.as_str().to_string());
                    template_refs(&x.for_expr.template, file, bound, out);
                    bound.truncate(depth);
                }
            },
        }
    }
}

/// The first call in `e` to a function that does not exist, if any.
fn unknown_calls(e: &Expression) -> Result<(), String> {
    struct Calls(Option<String>);
    impl hcl_edit::visit::Visit for Calls {
        fn visit_func_call(&mut self, node: &hcl_edit::expr::FuncCall) {
            let name = node.name.name.as_str();
            let core = node.name.namespace.is_empty()
                || (node.name.namespace.len() == 1 && node.name.namespace[0].as_str() == "core");
            let known =
                core && (matches!(name, "try" | "can") || crate::funcs::function(name).is_some());
            if !known && self.0.is_none() {
                self.0 = Some(
                    node.name
                        .namespace
                        .iter()
                        .map(|n| n.as_str())
                        .chain([name])
                        .collect::<Vec<_>>()
                        .join("::"),
                );
            }
            hcl_edit::visit::visit_func_call(self, node);
        }
    }
    let mut c = Calls(None);
    hcl_edit::visit::Visit::visit_expr(&mut c, e);
    match c.0 {
        Some(name) => Err(name),
        None => Ok(()),
    }
}

/// `s` in Unicode's composed form (NFC), as Terraform keeps every string.
fn nfc(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    unicode_normalization::UnicodeNormalization::nfc(s).collect()
}

/// A quoted string's escape sequences decoded (`\n`, `\r`, `\t`, `\"`, `\\`,
/// `\uNNNN`, `\UNNNNNNNN`); anything else left as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(u @ ('u' | 'U')) => {
                let n = if u == 'u' { 4 } else { 8 };
                let hex: String = chars.clone().take(n).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(c) if hex.len() == n => {
                        out.push(c);
                        for _ in 0..n {
                            chars.next();
                        }
                    }
                    _ => {
                        out.push('\\');
                        out.push(u);
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Whether `e` calls `sensitive()` anywhere but inside a `nonsensitive()` or
/// `issensitive()` call, whose results are unmarked as in Terraform
/// (`nonsensitive(sensitive(x))` is not sensitive).
pub fn calls_sensitive(e: &Expression) -> bool {
    use hcl_edit::visit::Visit;
    struct Find(bool);
    impl Visit for Find {
        fn visit_func_call(&mut self, node: &hcl_edit::expr::FuncCall) {
            if self.0 || node.name.namespace.iter().any(|n| n.as_str() != "core") {
                return;
            }
            match node.name.name.as_str() {
                "sensitive" => self.0 = true,
                "nonsensitive" | "issensitive" => {}
                _ => hcl_edit::visit::visit_func_call(self, node),
            }
        }
    }
    let mut f = Find(false);
    f.visit_expr(e);
    f.0
}

/// A heredoc's literal texts as HCL reads them, by the address of each literal element:
/// HCL cuts a heredoc into a token per line, so a strip marker (`~`) trims only the rest of
/// its own line, and a flush heredoc (`<<-`) then loses the least indentation of its lines
/// that start with text (whitespace-only lines aside), in directives' bodies too. `None`
/// when the parser kept no source positions.
fn heredoc_literals(
    h: &hcl_edit::template::HeredocTemplate,
    src: &str,
) -> Option<std::collections::HashMap<usize, String>> {
    use hcl_edit::template::Strip as StripMode;
    enum Tok<'a> {
        Lit(&'a hcl_edit::Spanned<String>),
        Seq(StripMode),
    }
    fn flatten<'a>(t: &'a Template, out: &mut Vec<Tok<'a>>) {
        for el in t.iter() {
            match el {
                Element::Literal(s) => out.push(Tok::Lit(s)),
                Element::Interpolation(ip) => out.push(Tok::Seq(ip.strip)),
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(x) => {
                        out.push(Tok::Seq(x.if_expr.strip));
                        flatten(&x.if_expr.template, out);
                        if let Some(e) = &x.else_expr {
                            out.push(Tok::Seq(e.strip));
                            flatten(&e.template, out);
                        }
                        out.push(Tok::Seq(x.endif_expr.strip));
                    }
                    Directive::For(x) => {
                        out.push(Tok::Seq(x.for_expr.strip));
                        flatten(&x.for_expr.template, out);
                        out.push(Tok::Seq(x.endfor_expr.strip));
                    }
                },
            }
        }
    }
    let flush = src.get(h.span()?)?.starts_with("<<-");
    let mut toks = vec![];
    flatten(&h.template, &mut toks);
    // HCL's tokens: (the literal element it belongs to, its text); `None` for a sequence.
    let mut pieces: Vec<(Option<usize>, String)> = vec![];
    let mut owners = vec![];
    let mut ltrim_next = false;
    for t in toks {
        match t {
            Tok::Lit(s) => {
                let raw = src
                    .get(s.span()?)?
                    .replace("$${", "${")
                    .replace("%%{", "%{");
                let owner = s.as_ref() as *const String as usize;
                owners.push(owner);
                for (i, line) in raw.split_inclusive('\n').enumerate() {
                    let text = if i == 0 && ltrim_next {
                        line.trim_start()
                    } else {
                        line
                    };
                    pieces.push((Some(owner), text.to_string()));
                }
                ltrim_next = false;
            }
            Tok::Seq(strip) => {
                if strip.strip_start() {
                    if let Some((Some(_), last)) = pieces.last_mut() {
                        *last = last.trim_end().to_string();
                    }
                }
                pieces.push((None, String::new()));
                ltrim_next = strip.strip_end();
            }
        }
    }
    if flush {
        let mut min = usize::MAX;
        let mut newline = true;
        let mut adjust = vec![];
        for (i, (owner, text)) in pieces.iter().enumerate() {
            if newline {
                newline = false;
                let spaces = match owner {
                    None => 0,
                    Some(_) => {
                        let trimmed = text.trim_start();
                        if trimmed.is_empty() && text.ends_with('\n') {
                            usize::MAX
                        } else {
                            adjust.push(i);
                            unicode_segmentation::UnicodeSegmentation::graphemes(
                                &text[..text.len() - trimmed.len()],
                                true,
                            )
                            .count()
                        }
                    }
                };
                min = min.min(spaces);
            }
            if owner.is_some() && text.ends_with('\n') {
                newline = true;
            }
        }
        if min != usize::MAX {
            for i in adjust {
                let text = &mut pieces[i].1;
                let cut: usize =
                    unicode_segmentation::UnicodeSegmentation::graphemes(text.as_str(), true)
                        .take(min)
                        .map(str::len)
                        .sum();
                text.drain(..cut);
            }
        }
    }
    let mut out: std::collections::HashMap<usize, String> =
        owners.into_iter().map(|o| (o, String::new())).collect();
    for (owner, text) in pieces {
        if let Some(o) = owner {
            out.entry(o).or_default().push_str(&text);
        }
    }
    Some(out)
}
