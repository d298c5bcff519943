//! Values of the language and their types.

pub use crate::number::Number;
use std::collections::BTreeMap;
use std::fmt;

/// A value: what expressions evaluate to and what resources hold.
///
/// `Unknown` stands for a value that only becomes known during apply (a computed attribute of
/// a resource not created yet); operations on it yield `Unknown`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (a 512-bit binary float, as Terraform's).
    Number(Number),
    /// A string.
    String(String),
    /// A list, set or tuple.
    List(Vec<Value>),
    /// A map or object.
    Object(BTreeMap<String, Value>),
    /// Known only after apply.
    Unknown,
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// True if this value or anything inside it is unknown.
    pub fn has_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::List(l) => l.iter().any(Value::has_unknown),
            Value::Object(o) => o.values().any(Value::has_unknown),
            _ => false,
        }
    }

    /// True for `Unknown` itself.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number inside, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(n.to_f64()),
            _ => None,
        }
    }

    /// The number inside, exactly, if this is a number.
    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// A number value from a float64 (precision 53; NaN is null).
    pub fn number(f: f64) -> Value {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }

    /// The bool inside, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The map inside, if this is an object.
    pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The elements inside, if this is a list.
    pub fn as_list(&self) -> Option<&Vec<Value>> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Attribute `name` of an object (`None` for other values or a missing attribute).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(name))
    }

    /// The name of this value's kind, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Object(_) => "object",
            Value::Unknown => "unknown",
        }
    }

    /// Converts to JSON; unknown values become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null | Value::Unknown => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number(n) => number_to_json(n),
            Value::String(s) => s.clone().into(),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Converts from JSON.
    pub fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(number_from_json(n)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON, with unknown values as `{"$unknown": true}` (for plans).
    pub fn to_plan_json(&self) -> serde_json::Value {
        match self {
            Value::Unknown => serde_json::json!({"$unknown": true}),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_plan_json).collect()),
            Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), v.to_plan_json()))
                    .collect(),
            ),
            v => v.to_json(),
        }
    }

    /// The inverse of [`Value::to_plan_json`].
    pub fn from_plan_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Object(o)
                if o.len() == 1 && o.get("$unknown") == Some(&serde_json::Value::Bool(true)) =>
            {
                Value::Unknown
            }
            serde_json::Value::Array(a) => {
                Value::List(a.iter().map(Value::from_plan_json).collect())
            }
            serde_json::Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_plan_json(v)))
                    .collect(),
            ),
            j => Value::from_json(j),
        }
    }

    /// The value as a string for interpolation, if it is a primitive.
    pub fn to_template_string(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.text()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A number as JSON can carry it: whole numbers exactly (within 64 bits), others as the
/// nearest float64 (state and plans hold numbers at that precision).
fn number_to_json(n: &Number) -> serde_json::Value {
    if n.is_integer() {
        if let Some(i) = n.trunc_int() {
            if let Some(v) = num_traits::ToPrimitive::to_i64(&i) {
                return v.into();
            }
            if let Some(v) = num_traits::ToPrimitive::to_u64(&i) {
                return v.into();
            }
        }
    }
    serde_json::Number::from_f64(n.to_f64())
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// A JSON number as the language reads one: its decimal text at 512 bits.
fn number_from_json(n: &serde_json::Number) -> Number {
    Number::parse(&n.to_string())
        .ok()
        .or_else(|| n.as_f64().and_then(Number::from_f64))
        .unwrap_or_else(Number::zero)
}

/// Formats a number the way the language prints it (the shortest decimal that reads back to
/// it, never with an exponent).
pub fn format_number(n: &Number) -> String {
    n.text()
}

impl fmt::Display for Value {
    /// Renders the value in HCL syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(&n.text()),
            Value::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Value::Unknown => f.write_str("(known after apply)"),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Object(o) => {
                f.write_str("{")?;
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if is_ident(k) {
                        write!(f, "{k} = {v}")?;
                    } else {
                        write!(f, "{} = {v}", serde_json::Value::String(k.clone()))?;
                    }
                }
                f.write_str("}")
            }
        }
    }
}

/// True if `s` can be written as a bare identifier.
pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::number(n)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(Number::from_i64(n))
    }
}
impl From<Number> for Value {
    fn from(n: Number) -> Self {
        Value::Number(n)
    }
}

/// A type constraint, as written in `variable` blocks and resource schemas.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    /// Anything.
    Any,
    /// A string.
    String,
    /// A number.
    Number,
    /// A bool.
    Bool,
    /// A list of one element type.
    List(Box<Type>),
    /// A set of one element type (kept as a sorted, deduplicated list).
    Set(Box<Type>),
    /// A map of one element type.
    Map(Box<Type>),
    /// An object with named attributes; each may be optional with a default.
    Object(Vec<ObjectAttr>),
    /// A tuple of element types.
    Tuple(Vec<Type>),
}

/// One attribute of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectAttr {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// `optional(...)`: may be left out.
    pub optional: bool,
    /// The default of an optional attribute.
    pub default: Option<Value>,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Tuple(ts) => {
                f.write_str("tuple([")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
            Type::Object(attrs) => {
                f.write_str("object({")?;
                for (i, a) in attrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if a.optional {
                        write!(f, "{} = optional({})", a.name, a.ty)?;
                    } else {
                        write!(f, "{} = {}", a.name, a.ty)?;
                    }
                }
                f.write_str("})")
            }
        }
    }
}

/// Converts `v` to type `ty`, the way Terraform converts values: numbers and bools to strings
/// and back, lists to sets, objects to maps. The error says what was expected.
pub fn convert(v: &Value, ty: &Type) -> Result<Value, String> {
    if v.is_unknown() {
        return Ok(Value::Unknown);
    }
    if v.is_null() {
        return Ok(Value::Null);
    }
    // A collection of any element type takes its elements' common type, as Terraform
    // unifies them: strings with numbers or bools make every element a string.
    if let (Type::List(t) | Type::Set(t) | Type::Map(t), Value::List(_) | Value::Object(_)) =
        (ty, v)
    {
        if **t == Type::Any {
            let elems: Vec<&Value> = match v {
                Value::List(l) => l.iter().collect(),
                Value::Object(o) => o.values().collect(),
                _ => vec![],
            };
            if let Some(common) = unify(&elems)? {
                let want = match ty {
                    Type::List(_) => Type::List(Box::new(common)),
                    Type::Set(_) => Type::Set(Box::new(common)),
                    _ => Type::Map(Box::new(common)),
                };
                return convert(v, &want);
            }
        }
    }
    match (ty, v) {
        (Type::Any, _) => Ok(v.clone()),
        (Type::String, Value::String(_)) => Ok(v.clone()),
        (Type::String, Value::Number(n)) => Ok(Value::String(n.text())),
        (Type::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (Type::Number, Value::Number(_)) => Ok(v.clone()),
        // The whole string, as Terraform reads it: " 5" is not a number.
        (Type::Number, Value::String(s)) => Number::parse(s)
            .ok()
            .filter(|n| !n.is_infinite())
            .map(Value::Number)
            .ok_or_else(|| format!("a number is required, but \"{s}\" is not a number")),
        (Type::Bool, Value::Bool(_)) => Ok(v.clone()),
        (Type::Bool, Value::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (Type::List(t), Value::List(l)) => l
            .iter()
            .enumerate()
            .map(|(i, e)| convert(e, t).map_err(|e| format!("element {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        (Type::Set(t), Value::List(l)) => {
            let mut out: Vec<Value> = Vec::new();
            for (i, e) in l.iter().enumerate() {
                let c = convert(e, t).map_err(|e| format!("element {i}: {e}"))?;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            order_set(&mut out);
            Ok(Value::List(out))
        }
        (Type::Map(t), Value::Object(o)) => o
            .iter()
            .map(|(k, e)| {
                convert(e, t)
                    .map(|c| (k.clone(), c))
                    .map_err(|e| format!("element \"{k}\": {e}"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Value::Object),
        (Type::Tuple(ts), Value::List(l)) => {
            if ts.len() != l.len() {
                return Err(format!(
                    "a tuple of {} elements is required, got {}",
                    ts.len(),
                    l.len()
                ));
            }
            l.iter()
                .zip(ts)
                .enumerate()
                .map(|(i, (e, t))| convert(e, t).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        }
        (Type::Object(attrs), Value::Object(o)) => {
            let mut out = BTreeMap::new();
            for a in attrs {
                match o.get(&a.name) {
                    Some(e) if !(e.is_null() && a.optional) => {
                        out.insert(
                            a.name.clone(),
                            convert(e, &a.ty)
                                .map_err(|e| format!("attribute \"{}\": {e}", a.name))?,
                        );
                    }
                    _ if a.optional => {
                        out.insert(a.name.clone(), a.default.clone().unwrap_or(Value::Null));
                    }
                    _ => return Err(format!("attribute \"{}\" is required", a.name)),
                }
            }
            for k in o.keys() {
                if !attrs.iter().any(|a| &a.name == k) {
                    let names: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
                    return Err(format!(
                        "unexpected attribute \"{k}\".{}",
                        crate::diag::did_you_mean(k, names)
                    ));
                }
            }
            Ok(Value::Object(out))
        }
        _ => Err(format!("{} required, got {}", article(ty), v.type_name())),
    }
}

/// The primitive type that values of several primitive types all convert to, as
/// Terraform's unification finds it: a string with numbers or bools makes strings; numbers
/// and bools together have none (an error). `None` when there is nothing to unify (one
/// type, or not only primitives).
pub fn unify(values: &[&Value]) -> Result<Option<Type>, String> {
    let (mut string, mut number, mut boolean) = (false, false, false);
    let (mut list, mut object) = (false, false);
    for v in values {
        match v {
            Value::String(_) => string = true,
            Value::Number(_) => number = true,
            Value::Bool(_) => boolean = true,
            Value::List(_) => list = true,
            Value::Object(_) => object = true,
            Value::Null | Value::Unknown => {}
        }
    }
    let primitive = string || number || boolean;
    if [primitive, list, object].iter().filter(|x| **x).count() > 1 {
        return Err("all elements must have the same type (a primitive, a list and an object have no common type)".into());
    }
    if !primitive {
        return Ok(None);
    }
    match (string, number, boolean) {
        (true, true, _) | (true, _, true) => Ok(Some(Type::String)),
        (false, true, true) => Err(
            "all elements must have the same type (a number and a bool have no common type)".into(),
        ),
        _ => Ok(None),
    }
}

fn article(ty: &Type) -> String {
    match ty {
        Type::String => "a string is".into(),
        Type::Number => "a number is".into(),
        Type::Bool => "a bool is".into(),
        Type::List(_) | Type::Set(_) | Type::Tuple(_) => format!("a {ty} is"),
        Type::Map(_) | Type::Object(_) => format!("a {ty} is"),
        Type::Any => "a value is".into(),
    }
}

/// A set's elements in Terraform's order: strings lexically, numbers numerically; others
/// as they came.
pub fn order_set(v: &mut [Value]) {
    if v.iter().all(|x| matches!(x, Value::String(_))) {
        v.sort_by(|a, b| match (a, b) {
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
    } else if v.iter().all(|x| matches!(x, Value::Number(_))) {
        v.sort_by(|a, b| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.cmp_value(y),
            _ => std::cmp::Ordering::Equal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(
            convert(&Value::from(3i64), &Type::String).unwrap(),
            Value::string("3")
        );
        assert_eq!(
            convert(&Value::string("4.5"), &Type::Number).unwrap(),
            Value::number(4.5)
        );
        assert!(convert(&Value::string("x"), &Type::Number).is_err());
        assert!(convert(&Value::List(vec![]), &Type::String).is_err());
        let set = convert(
            &Value::List(vec!["a".into(), "a".into(), "b".into()]),
            &Type::Set(Box::new(Type::String)),
        )
        .unwrap();
        assert_eq!(set, Value::List(vec!["a".into(), "b".into()]));
        let obj_ty = Type::Object(vec![
            ObjectAttr {
                name: "a".into(),
                ty: Type::Number,
                optional: false,
                default: None,
            },
            ObjectAttr {
                name: "b".into(),
                ty: Type::String,
                optional: true,
                default: Some("d".into()),
            },
        ]);
        let v = Value::Object([("a".to_string(), Value::from(1i64))].into());
        assert_eq!(
            convert(&v, &obj_ty).unwrap().get("b"),
            Some(&Value::string("d"))
        );
        assert!(convert(&Value::Object(BTreeMap::new()), &obj_ty).is_err());
    }

    #[test]
    fn display_and_json() {
        let v = Value::Object(
            [(
                "a".to_string(),
                Value::List(vec![Value::from(1i64), Value::Unknown]),
            )]
            .into(),
        );
        assert_eq!(v.to_string(), "{a = [1, (known after apply)]}");
        assert_eq!(Value::from_plan_json(&v.to_plan_json()), v);
    }
}
