//! Typed resource types: a controller written against `Config` and `State` structs instead of
//! reading attributes by name.
//!
//! A [`Typed`] type declares its configuration and its state as serde structs (the state
//! usually flattens the configuration and adds the computed attributes), and one `ensure` that
//! makes the real object match a configuration: create, update and reconcile all go through it,
//! so a type is level-triggered unless it says otherwise. [`check_schema`] proves in a test that
//! the structs and the schema agree (same attribute names, compatible types), so a misspelt
//! field fails a test instead of reading as empty at run time. Every `Typed` type is a
//! [`Resource`]: the engine sees no difference.

use crate::{AttrError, AttrMode, Ctx, Nesting, Resource, ResourceError, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use veeps_lang::{Type, Value};

/// What reading the real object found.
#[derive(Debug)]
pub enum Observed<S> {
    /// It exists, as given.
    Exists(S),
    /// It is gone: the next plan recreates it.
    Gone,
    /// Nothing about it can be observed from outside (what the state records is all there
    /// is); drift cannot be seen.
    NotObservable,
}

/// A resource type with typed configuration and state. See the module documentation.
#[async_trait::async_trait]
pub trait Typed: Send + Sync + 'static {
    /// The settable attributes and blocks.
    type Config: DeserializeOwned + Send + Sync;
    /// Everything recorded: the configuration plus computed attributes.
    type State: Serialize + DeserializeOwned + Send + Sync;
    /// The type name used in configuration, like `vpc`.
    const TYPE: &'static str;
    /// The layout version of the recorded state; raise it (and handle the old one in
    /// [`Typed::upgrade`]) when the state's shape changes.
    const VERSION: u64 = 1;

    /// Its schema.
    fn schema(&self) -> &Schema;
    /// Checks beyond types, on the known parts of a configuration (unknown values possible).
    fn validate(&self, _config: &Value) -> Vec<AttrError> {
        Vec::new()
    }
    /// Computed attributes known before apply.
    fn plan_computed(&self, _ctx: &Ctx, _config: &Value) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }
    /// Makes the real object match `config`, adopting whatever exists already; `prior` is the
    /// recorded state when there is one (update, reconcile). Idempotent.
    async fn ensure(
        &self,
        ctx: &Ctx,
        prior: Option<&Self::State>,
        config: &Self::Config,
    ) -> Result<Self::State, ResourceError>;
    /// Reads the real object.
    async fn read(
        &self,
        ctx: &Ctx,
        state: &Self::State,
    ) -> Result<Observed<Self::State>, ResourceError>;
    /// Deletes the object; deleting something already gone succeeds.
    async fn delete(&self, ctx: &Ctx, state: &Self::State) -> Result<(), ResourceError>;
    /// After a server restart: by default `ensure` with the recorded configuration.
    async fn reconcile(
        &self,
        ctx: &Ctx,
        state: &Self::State,
    ) -> Result<Self::State, ResourceError> {
        let config: Self::Config = decode(Self::TYPE, &encode(state)?)?;
        self.ensure(ctx, Some(state), &config).await
    }
    /// Turns state recorded at layout version `from` into the current layout.
    fn upgrade(&self, from: u64, _state: Value) -> Result<Value, ResourceError> {
        Err(ResourceError::Invalid(format!(
            "no upgrade from state layout {from} of {} to {}",
            Self::TYPE,
            Self::VERSION
        )))
    }
}

/// Reads a typed value from an attribute value; the error names the attribute at fault.
pub fn decode<T: DeserializeOwned>(type_name: &str, v: &Value) -> Result<T, ResourceError> {
    let mut json = v.to_json();
    // An attribute set to null is an attribute not set (as in Terraform): its default.
    fn unset_nulls(j: &mut serde_json::Value) {
        match j {
            serde_json::Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(unset_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(unset_nulls),
            _ => {}
        }
    }
    unset_nulls(&mut json);
    serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        ResourceError::Attr {
            type_name: type_name.to_string(),
            attr: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// Writes a typed value as an attribute value.
pub fn encode<T: Serialize>(v: &T) -> Result<Value, ResourceError> {
    serde_json::to_value(v)
        .map(|j| Value::from_json(&j))
        .map_err(|e| ResourceError::Failed(format!("encoding state: {e}")))
}

#[async_trait::async_trait]
impl<T: Typed> Resource for T {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }
    fn schema(&self) -> &Schema {
        Typed::schema(self)
    }
    fn schema_version(&self) -> u64 {
        T::VERSION
    }
    fn validate(&self, config: &Value) -> Vec<AttrError> {
        Typed::validate(self, config)
    }
    fn plan_computed(&self, ctx: &Ctx, config: &Value) -> BTreeMap<String, Value> {
        Typed::plan_computed(self, ctx, config)
    }
    async fn create(&self, ctx: &Ctx, config: &Value) -> Result<Value, ResourceError> {
        let c = decode(T::TYPE, config)?;
        encode(&self.ensure(ctx, None, &c).await?)
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let s = decode(T::TYPE, state)?;
        Ok(match Typed::read(self, ctx, &s).await? {
            Observed::Exists(s) => Some(encode(&s)?),
            Observed::Gone => None,
            Observed::NotObservable => Some(state.clone()),
        })
    }
    async fn update(
        &self,
        ctx: &Ctx,
        prior: &Value,
        config: &Value,
    ) -> Result<Value, ResourceError> {
        let p = decode(T::TYPE, prior)?;
        let c = decode(T::TYPE, config)?;
        encode(&self.ensure(ctx, Some(&p), &c).await?)
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        Typed::delete(self, ctx, &decode(T::TYPE, state)?).await
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        encode(&Typed::reconcile(self, ctx, &decode(T::TYPE, state)?).await?)
    }
    fn upgrade(&self, from: u64, state: Value) -> Result<Value, ResourceError> {
        Typed::upgrade(self, from, state)
    }
}

/// A value of type `ty` with everything in it set.
fn sample(ty: &Type) -> Value {
    match ty {
        Type::Any | Type::String => Value::string("s"),
        Type::Number => Value::from(1i64),
        Type::Bool => Value::Bool(true),
        Type::List(t) | Type::Set(t) => Value::List(vec![sample(t)]),
        Type::Map(t) => Value::Object([("k".to_string(), sample(t))].into()),
        Type::Object(attrs) => Value::Object(
            attrs
                .iter()
                .map(|a| (a.name.clone(), sample(&a.ty)))
                .collect(),
        ),
        Type::Tuple(ts) => Value::List(ts.iter().map(sample).collect()),
    }
}

/// A configuration (`computed` false) or state (`computed` true) of `schema` with every
/// attribute set (`full`) or every optional one null.
fn sample_of(schema: &Schema, computed: bool, full: bool) -> Value {
    let mut o = BTreeMap::new();
    for a in &schema.attrs {
        let v = match a.mode {
            AttrMode::Required => sample(&a.ty),
            AttrMode::Computed if !computed => continue,
            AttrMode::Computed => sample(&a.ty),
            AttrMode::Optional | AttrMode::OptionalComputed if full || computed => sample(&a.ty),
            AttrMode::Optional | AttrMode::OptionalComputed => {
                a.default.clone().unwrap_or(Value::Null)
            }
        };
        o.insert(a.name.to_string(), v);
    }
    for b in &schema.blocks {
        let inner = sample_of(&b.schema, computed, full);
        let v = match b.nesting {
            Nesting::Single if full || b.min_items > 0 => inner,
            Nesting::Single => Value::Null,
            Nesting::List if full || b.min_items > 0 => Value::List(vec![inner]),
            Nesting::List => Value::List(vec![]),
        };
        o.insert(b.name.to_string(), v);
    }
    Value::Object(o)
}

/// Proves that a type's `Config` and `State` agree with its schema: a configuration with
/// every attribute set, and one with every optional attribute left out, decode as `Config`;
/// the state with every attribute set decodes as `State` and encodes back to exactly the same
/// attributes. Call it from a test of every typed type.
pub fn check_schema<T: Typed>(t: &T) -> Result<(), String> {
    let schema = Typed::schema(t);
    for full in [true, false] {
        let config = sample_of(schema, false, full);
        decode::<T::Config>(T::TYPE, &config).map_err(|e| {
            format!(
                "{}: the configuration {config} does not decode: {e}",
                T::TYPE
            )
        })?;
    }
    let state = sample_of(schema, true, true);
    let s: T::State = decode(T::TYPE, &state)
        .map_err(|e| format!("{}: the state {state} does not decode: {e}", T::TYPE))?;
    let back = encode(&s).map_err(|e| e.to_string())?;
    if back != state {
        return Err(format!(
            "{}: the state struct and the schema disagree:\n schema: {state}\n struct: {back}",
            T::TYPE
        ));
    }
    Ok(())
}

/// Reads a list block (or list attribute) that may be null as a `Vec`, empty when null:
/// `#[serde(deserialize_with = "veeps_resource::typed::list")]`.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Conf {
        #[serde(default)]
        directory: String,
        name: Option<String>,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Inner {
        #[serde(default = "seven")]
        n: u32,
    }

    fn seven() -> u32 {
        7
    }

    #[test]
    fn an_attribute_set_to_null_takes_its_default() {
        let v = Value::from_json(&serde_json::json!({
            "directory": null,
            "name": null,
            "inner": [{"n": null}, {"n": 2}],
        }));
        let c: Conf = decode("t", &v).unwrap();
        assert_eq!(
            c,
            Conf {
                directory: String::new(),
                name: None,
                inner: vec![Inner { n: 7 }, Inner { n: 2 }],
            }
        );
        // A wrong type is still named.
        let bad = Value::from_json(&serde_json::json!({"directory": 3}));
        let e = decode::<Conf>("t", &bad).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
    }
}
