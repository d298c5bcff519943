//! `data "environment"`: the outputs of another environment.

use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrSchema, Ctx, DataSource, EnvOutputsService, ResourceError, Schema};

/// The `environment` data source.
pub struct EnvironmentData {
    schema: Schema,
}

impl EnvironmentData {
    /// The type with its schema.
    pub fn new() -> EnvironmentData {
        EnvironmentData {
            schema: Schema::new()
                .attr(
                    AttrSchema::required("name", Type::String).describe("the environment to read"),
                )
                .attr(AttrSchema::computed(
                    "outputs",
                    Type::Map(Box::new(Type::Any)),
                )),
        }
    }
}

impl Default for EnvironmentData {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl DataSource for EnvironmentData {
    fn type_name(&self) -> &'static str {
        "environment"
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, ResourceError> {
        let name = get::str(config, "name").unwrap_or_default().to_string();
        let svc = ctx.services.get::<EnvOutputsService>().ok_or_else(|| {
            ResourceError::Failed("environment outputs are not available here".into())
        })?;
        let outputs = svc.0.outputs(&name).map_err(ResourceError::Failed)?;
        let mut s = config.as_object().cloned().unwrap_or_default();
        // Not applied yet: its outputs become known once it is (plans show them as unknown).
        s.insert(
            "outputs".into(),
            outputs.map(Value::Object).unwrap_or(Value::Unknown),
        );
        Ok(Value::Object(s))
    }
}
