//! The IAM resource types: `iam_user`, `iam_group`, `iam_policy`,
//! `iam_group_membership` and `iam_password_policy`. They are global to the server (like
//! an AWS account): an environment declares them, and a name another environment
//! declares is refused.

use crate::directory::{self, Directory, IamError};
use crate::password::PasswordPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::typed::list;
use veeps_resource::{
    get, list_of_strings, map_of_strings, AttrError, AttrSchema, Ctx, Observed, Registry,
    ResourceError, Schema, Typed,
};

/// Registers the IAM types.
pub fn register(r: &mut Registry) {
    r.register(UserType::new());
    r.register(GroupType::new());
    r.register(PolicyType::new());
    r.register(MembershipType::new());
    r.register(PasswordPolicyType::new());
    r.register(KmsKeyType::new());
    r.register(RoleType::new());
}

fn dir(ctx: &Ctx) -> Result<&Arc<Directory>, ResourceError> {
    ctx.service::<Arc<Directory>>("IAM")
}

fn err(e: IamError) -> ResourceError {
    match e {
        IamError::Invalid(m) => ResourceError::Invalid(m),
        other => ResourceError::part("IAM", other),
    }
}

fn name_error(kind: &str, c: &Value) -> Vec<AttrError> {
    match get::str(c, "name").map(|n| directory::check_name(kind, n)) {
        Some(Err(e)) => vec![AttrError::on("name", e)],
        _ => vec![],
    }
}

/// An optional list as observed: left out (`None`) when it was left out and is empty.
fn observed(prior: &Option<Vec<String>>, now: Vec<String>) -> Option<Vec<String>> {
    if prior.is_none() && now.is_empty() {
        None
    } else {
        Some(now)
    }
}

fn exists(d: &Directory, kind: &'static str, name: &str) -> Result<(), ResourceError> {
    let found = match kind {
        "group" => d.group(name).is_some(),
        "user" => d.user(name).is_some(),
        _ => d.policy(name).is_some(),
    };
    if found {
        Ok(())
    } else {
        Err(ResourceError::Invalid(format!(
            "no {kind} named {name}: declare it (resource \"iam_{kind}\") and refer to it, like iam_{kind}.x.name, so that it is created first"
        )))
    }
}

/// `iam_user`: a person or a program that signs in.
pub struct UserType(Schema);

impl UserType {
    /// The type with its schema.
    pub fn new() -> Self {
        UserType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(
                    AttrSchema::optional("groups", list_of_strings())
                        .describe("groups it belongs to (iam_group names)"),
                )
                .attr(
                    AttrSchema::optional("ssh_public_keys", list_of_strings())
                        .describe("public keys it logs in to instances with"),
                )
                .attr(AttrSchema::optional("tags", map_of_strings()))
                .attr(AttrSchema::computed("arn", Type::String)),
        )
    }
}

impl Default for UserType {
    fn default() -> Self {
        Self::new()
    }
}

/// `iam_user`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserConfig {
    name: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    ssh_public_keys: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

/// `iam_user`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserState {
    #[serde(flatten)]
    config: UserConfig,
    arn: String,
}

#[async_trait::async_trait]
impl Typed for UserType {
    type Config = UserConfig;
    type State = UserState;
    const TYPE: &'static str = "iam_user";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = name_error("user", c);
        for k in get::strings(c, "ssh_public_keys") {
            let kind = k.split_whitespace().next().unwrap_or("");
            if ![
                "ssh-ed25519",
                "ssh-rsa",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "sk-ssh-ed25519@openssh.com",
            ]
            .contains(&kind)
                || k.split_whitespace().nth(1).is_none()
            {
                out.push(AttrError::on(
                    "ssh_public_keys",
                    format!("\"{}\" is not an OpenSSH public key (like \"ssh-ed25519 AAAA... you@host\")", k.chars().take(40).collect::<String>()),
                ));
            }
        }
        out
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "arn".to_string(),
            Value::String(directory::user_arn(get::str(c, "name").unwrap_or_default())),
        )]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&UserState>,
        c: &UserConfig,
    ) -> Result<UserState, ResourceError> {
        let d = dir(ctx)?;
        let groups = c.groups.clone().unwrap_or_default();
        for g in &groups {
            exists(d, "group", g)?;
        }
        d.put_user(
            &ctx.env,
            &c.name,
            &groups,
            &c.ssh_public_keys.clone().unwrap_or_default(),
            &c.tags.clone().unwrap_or_default(),
        )
        .map_err(err)?;
        Ok(UserState {
            config: c.clone(),
            arn: directory::user_arn(&c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &UserState) -> Result<Observed<UserState>, ResourceError> {
        Ok(match dir(ctx)?.user(&s.config.name) {
            Some(u) => Observed::Exists(UserState {
                config: UserConfig {
                    name: u.name,
                    groups: observed(&s.config.groups, u.groups),
                    ssh_public_keys: observed(&s.config.ssh_public_keys, u.ssh_keys),
                    tags: s.config.tags.as_ref().map(|_| u.tags),
                },
                arn: s.arn.clone(),
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &UserState) -> Result<(), ResourceError> {
        dir(ctx)?.delete_user(&ctx.env, &s.config.name).map_err(err)
    }
}

/// `iam_group`: the policies its members get.
pub struct GroupType(Schema);

impl GroupType {
    /// The type with its schema.
    pub fn new() -> Self {
        GroupType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::optional("policies", list_of_strings()).describe(
                    "attached policies: iam_policy names or ARNs, or AdministratorAccess, ReadOnlyAccess, RequireMFA, Billing",
                ))
                .attr(AttrSchema::computed("arn", Type::String)),
        )
    }
}

impl Default for GroupType {
    fn default() -> Self {
        Self::new()
    }
}

/// `iam_group`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupConfig {
    name: String,
    #[serde(default)]
    policies: Option<Vec<String>>,
}

/// `iam_group`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupState {
    #[serde(flatten)]
    config: GroupConfig,
    arn: String,
}

fn group_arn(name: &str) -> String {
    format!("arn:veeps:iam::group/{name}")
}

#[async_trait::async_trait]
impl Typed for GroupType {
    type Config = GroupConfig;
    type State = GroupState;
    const TYPE: &'static str = "iam_group";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        name_error("group", c)
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "arn".to_string(),
            Value::String(group_arn(get::str(c, "name").unwrap_or_default())),
        )]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&GroupState>,
        c: &GroupConfig,
    ) -> Result<GroupState, ResourceError> {
        let d = dir(ctx)?;
        let policies = c.policies.clone().unwrap_or_default();
        for p in &policies {
            exists(d, "policy", p)?;
        }
        d.put_group(&ctx.env, &c.name, &policies).map_err(err)?;
        Ok(GroupState {
            config: c.clone(),
            arn: group_arn(&c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &GroupState) -> Result<Observed<GroupState>, ResourceError> {
        Ok(match dir(ctx)?.group(&s.config.name) {
            Some(g) => Observed::Exists(GroupState {
                config: GroupConfig {
                    name: g.name,
                    policies: observed(&s.config.policies, g.policies),
                },
                arn: s.arn.clone(),
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &GroupState) -> Result<(), ResourceError> {
        dir(ctx)?
            .delete_group(&ctx.env, &s.config.name)
            .map_err(err)
    }
}

/// `iam_policy`: a policy document in AWS's grammar over veeps' actions and ARNs.
pub struct PolicyType(Schema);

impl PolicyType {
    /// The type with its schema.
    pub fn new() -> Self {
        PolicyType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::required("policy", Type::String).describe(
                    "the document (jsonencode of Version and Statement), in AWS IAM's grammar",
                ))
                .attr(AttrSchema::optional("description", Type::String).default(""))
                .attr(AttrSchema::computed("arn", Type::String)),
        )
    }
}

impl Default for PolicyType {
    fn default() -> Self {
        Self::new()
    }
}

/// `iam_policy`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyConfig {
    name: String,
    policy: String,
    description: String,
}

/// `iam_policy`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyState {
    #[serde(flatten)]
    config: PolicyConfig,
    arn: String,
}

fn policy_arn(name: &str) -> String {
    format!("arn:veeps:iam::policy/{name}")
}

#[async_trait::async_trait]
impl Typed for PolicyType {
    type Config = PolicyConfig;
    type State = PolicyState;
    const TYPE: &'static str = "iam_policy";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = name_error("policy", c);
        if let Some(p) = get::str(c, "policy") {
            if let Err(e) = crate::Policy::parse(p, &directory::IDENTITY_POLICIES) {
                out.push(AttrError::on("policy", e));
            }
        }
        out
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "arn".to_string(),
            Value::String(policy_arn(get::str(c, "name").unwrap_or_default())),
        )]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&PolicyState>,
        c: &PolicyConfig,
    ) -> Result<PolicyState, ResourceError> {
        dir(ctx)?
            .put_policy(&ctx.env, &c.name, &c.policy)
            .map_err(err)?;
        Ok(PolicyState {
            config: c.clone(),
            arn: policy_arn(&c.name),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &PolicyState,
    ) -> Result<Observed<PolicyState>, ResourceError> {
        Ok(match dir(ctx)?.policy(&s.config.name) {
            Some(doc) => Observed::Exists(PolicyState {
                config: PolicyConfig {
                    policy: doc,
                    ..s.config.clone()
                },
                arn: s.arn.clone(),
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &PolicyState) -> Result<(), ResourceError> {
        dir(ctx)?
            .delete_policy(&ctx.env, &s.config.name)
            .map_err(err)
    }
}

/// `iam_group_membership`: users added to a group.
pub struct MembershipType(Schema);

impl MembershipType {
    /// The type with its schema.
    pub fn new() -> Self {
        MembershipType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::required("group", Type::String))
                .attr(AttrSchema::required("users", list_of_strings())),
        )
    }
}

impl Default for MembershipType {
    fn default() -> Self {
        Self::new()
    }
}

/// `iam_group_membership`'s settable attributes (its state too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipConfig {
    name: String,
    group: String,
    #[serde(deserialize_with = "list")]
    users: Vec<String>,
}

#[async_trait::async_trait]
impl Typed for MembershipType {
    type Config = MembershipConfig;
    type State = MembershipConfig;
    const TYPE: &'static str = "iam_group_membership";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        name_error("membership", c)
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&MembershipConfig>,
        c: &MembershipConfig,
    ) -> Result<MembershipConfig, ResourceError> {
        let d = dir(ctx)?;
        exists(d, "group", &c.group)?;
        for u in &c.users {
            exists(d, "user", u)?;
        }
        d.put_membership(&ctx.env, &c.name, &c.group, &c.users)
            .map_err(err)?;
        Ok(c.clone())
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &MembershipConfig,
    ) -> Result<Observed<MembershipConfig>, ResourceError> {
        Ok(match dir(ctx)?.membership(&s.name) {
            Some(m) => Observed::Exists(MembershipConfig {
                name: m.name,
                group: m.group,
                users: m.users,
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &MembershipConfig) -> Result<(), ResourceError> {
        dir(ctx)?.delete_membership(&ctx.env, &s.name).map_err(err)
    }
}

/// `iam_password_policy`: what passwords must be (one per server).
pub struct PasswordPolicyType(Schema);

impl PasswordPolicyType {
    /// The type with its schema.
    pub fn new() -> Self {
        let d = PasswordPolicy::default();
        PasswordPolicyType(
            Schema::new()
                .attr(
                    AttrSchema::optional("minimum_password_length", Type::Number)
                        .default(d.minimum_password_length as f64),
                )
                .attr(
                    AttrSchema::optional("require_uppercase_characters", Type::Bool).default(false),
                )
                .attr(
                    AttrSchema::optional("require_lowercase_characters", Type::Bool).default(false),
                )
                .attr(AttrSchema::optional("require_numbers", Type::Bool).default(false))
                .attr(AttrSchema::optional("require_symbols", Type::Bool).default(false))
                .attr(
                    AttrSchema::optional("password_reuse_prevention", Type::Number)
                        .default(0.0)
                        .describe("how many previous passwords may not be used again"),
                )
                .attr(
                    AttrSchema::optional("max_password_age", Type::Number)
                        .default(0.0)
                        .describe("days a password is good for (0: forever)"),
                )
                .attr(
                    AttrSchema::optional("allow_users_to_change_password", Type::Bool)
                        .default(true),
                ),
        )
    }
}

impl Default for PasswordPolicyType {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Typed for PasswordPolicyType {
    type Config = PasswordPolicy;
    type State = PasswordPolicy;
    const TYPE: &'static str = "iam_password_policy";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = vec![];
        for (k, lo, hi) in [
            ("minimum_password_length", 6.0, 128.0),
            ("password_reuse_prevention", 0.0, 24.0),
            ("max_password_age", 0.0, 1095.0),
        ] {
            if let Some(n) = get::num(c, k) {
                if !(lo..=hi).contains(&n) || n.fract() != 0.0 {
                    out.push(AttrError::on(
                        k,
                        format!("must be a whole number from {lo} to {hi}"),
                    ));
                }
            }
        }
        out
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&PasswordPolicy>,
        c: &PasswordPolicy,
    ) -> Result<PasswordPolicy, ResourceError> {
        dir(ctx)?
            .set_password_policy(&ctx.env, Some(c))
            .map_err(err)?;
        Ok(c.clone())
    }
    async fn read(
        &self,
        ctx: &Ctx,
        _s: &PasswordPolicy,
    ) -> Result<Observed<PasswordPolicy>, ResourceError> {
        Ok(match dir(ctx)?.password_policy_record() {
            Some((_, p)) => Observed::Exists(p),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, _s: &PasswordPolicy) -> Result<(), ResourceError> {
        dir(ctx)?.set_password_policy(&ctx.env, None).map_err(err)
    }
}

/// `iam_role`: policies that temporary credentials get (`veeps iam assume-role`).
pub struct RoleType(Schema);

impl RoleType {
    /// The type with its schema.
    pub fn new() -> Self {
        RoleType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(
                    AttrSchema::optional("policies", list_of_strings()).describe(
                        "attached policies: iam_policy names or ARNs, or the managed ones",
                    ),
                )
                .attr(
                    AttrSchema::optional("max_session_duration", Type::Number)
                        .default(3600.0)
                        .describe("seconds a session lasts at most (3600 to 43200)"),
                )
                .attr(AttrSchema::computed("arn", Type::String)),
        )
    }
}

impl Default for RoleType {
    fn default() -> Self {
        Self::new()
    }
}

/// `iam_role`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleConfig {
    name: String,
    #[serde(default)]
    policies: Option<Vec<String>>,
    max_session_duration: i64,
}

/// `iam_role`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleState {
    #[serde(flatten)]
    config: RoleConfig,
    arn: String,
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam:::role/{name}")
}

#[async_trait::async_trait]
impl Typed for RoleType {
    type Config = RoleConfig;
    type State = RoleState;
    const TYPE: &'static str = "iam_role";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = name_error("role", c);
        if let Some(n) = get::num(c, "max_session_duration") {
            if !(3600.0..=43200.0).contains(&n) || n.fract() != 0.0 {
                out.push(AttrError::on(
                    "max_session_duration",
                    "must be a whole number of seconds from 3600 to 43200 (as AWS)",
                ));
            }
        }
        out
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "arn".to_string(),
            Value::String(role_arn(get::str(c, "name").unwrap_or_default())),
        )]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&RoleState>,
        c: &RoleConfig,
    ) -> Result<RoleState, ResourceError> {
        let d = dir(ctx)?;
        let policies = c.policies.clone().unwrap_or_default();
        for p in &policies {
            exists(d, "policy", p)?;
        }
        d.put_role(&directory::Role {
            name: c.name.clone(),
            env: ctx.env.clone(),
            policies,
            max_session_seconds: c.max_session_duration,
        })
        .map_err(err)?;
        Ok(RoleState {
            config: c.clone(),
            arn: role_arn(&c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &RoleState) -> Result<Observed<RoleState>, ResourceError> {
        Ok(match dir(ctx)?.role(&s.config.name) {
            Some(r) => Observed::Exists(RoleState {
                config: RoleConfig {
                    name: r.name,
                    policies: observed(&s.config.policies, r.policies),
                    max_session_duration: r.max_session_seconds,
                },
                arn: s.arn.clone(),
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &RoleState) -> Result<(), ResourceError> {
        dir(ctx)?.delete_role(&ctx.env, &s.config.name).map_err(err)
    }
}

/// `kms_key`: the environment's key, with its administrators and users (IAM groups), its
/// rotation and the waiting period of its deletion.
pub struct KmsKeyType(Schema);

impl KmsKeyType {
    /// The type with its schema.
    pub fn new() -> Self {
        KmsKeyType(
            Schema::new()
                .attr(AttrSchema::optional("description", Type::String).default(""))
                .attr(
                    AttrSchema::optional("administrators", list_of_strings()).describe(
                        "groups that administer the key: rotate, export, cancel deletion",
                    ),
                )
                .attr(
                    AttrSchema::optional("users", list_of_strings())
                        .describe("groups that encrypt and decrypt with the key"),
                )
                .attr(AttrSchema::optional("enable_key_rotation", Type::Bool).default(false))
                .attr(AttrSchema::optional("rotation_period_in_days", Type::Number).default(365.0))
                .attr(
                    AttrSchema::optional("deletion_window_in_days", Type::Number)
                        .default(30.0)
                        .describe("days between removing the key and its destruction (7 to 30)"),
                )
                .attr(AttrSchema::computed("arn", Type::String))
                .attr(AttrSchema::computed("key_id", Type::String)),
        )
    }
}

impl Default for KmsKeyType {
    fn default() -> Self {
        Self::new()
    }
}

/// `kms_key`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KmsKeyConfig {
    description: String,
    #[serde(default)]
    administrators: Option<Vec<String>>,
    #[serde(default)]
    users: Option<Vec<String>>,
    enable_key_rotation: bool,
    rotation_period_in_days: u32,
    deletion_window_in_days: u32,
}

/// `kms_key`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KmsKeyState {
    #[serde(flatten)]
    config: KmsKeyConfig,
    arn: String,
    key_id: String,
}

fn key_arn(env: &str) -> String {
    format!("arn:veeps:kms:{env}:key/default")
}

#[async_trait::async_trait]
impl Typed for KmsKeyType {
    type Config = KmsKeyConfig;
    type State = KmsKeyState;
    const TYPE: &'static str = "kms_key";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = vec![];
        for (k, lo, hi) in [
            ("rotation_period_in_days", 90.0, 2560.0),
            ("deletion_window_in_days", 7.0, 30.0),
        ] {
            if let Some(n) = get::num(c, k) {
                if !(lo..=hi).contains(&n) || n.fract() != 0.0 {
                    out.push(AttrError::on(
                        k,
                        format!("must be a whole number from {lo} to {hi} (as AWS KMS)"),
                    ));
                }
            }
        }
        out
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [
            ("arn".to_string(), Value::String(key_arn(&ctx.env))),
            ("key_id".to_string(), Value::String(ctx.env.clone())),
        ]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&KmsKeyState>,
        c: &KmsKeyConfig,
    ) -> Result<KmsKeyState, ResourceError> {
        let d = dir(ctx)?;
        let administrators = c.administrators.clone().unwrap_or_default();
        let users = c.users.clone().unwrap_or_default();
        for g in administrators.iter().chain(&users) {
            exists(d, "group", g)?;
        }
        d.put_key_policy(directory::KeyPolicy {
            env: ctx.env.clone(),
            address: ctx.address.clone(),
            description: c.description.clone(),
            administrators,
            users,
            rotation_days: c.enable_key_rotation.then_some(c.rotation_period_in_days),
            deletion_window_days: c.deletion_window_in_days,
            pending_deletion: None,
            last_rotation: time::OffsetDateTime::now_utc().unix_timestamp(),
        })
        .map_err(err)?;
        Ok(KmsKeyState {
            config: c.clone(),
            arn: key_arn(&ctx.env),
            key_id: ctx.env.clone(),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &KmsKeyState,
    ) -> Result<Observed<KmsKeyState>, ResourceError> {
        Ok(match dir(ctx)?.key_policy(&ctx.env) {
            Some(k) if k.pending_deletion.is_none() => Observed::Exists(KmsKeyState {
                config: KmsKeyConfig {
                    description: k.description,
                    administrators: observed(&s.config.administrators, k.administrators),
                    users: observed(&s.config.users, k.users),
                    enable_key_rotation: k.rotation_days.is_some(),
                    rotation_period_in_days: k
                        .rotation_days
                        .unwrap_or(s.config.rotation_period_in_days),
                    deletion_window_in_days: k.deletion_window_days,
                },
                ..s.clone()
            }),
            _ => Observed::Gone,
        })
    }
    /// Schedules the key's destruction after its deletion window (applying it again
    /// before then cancels it).
    async fn delete(&self, ctx: &Ctx, _s: &KmsKeyState) -> Result<(), ResourceError> {
        dir(ctx)?
            .schedule_key_deletion(&ctx.env, time::OffsetDateTime::now_utc().unix_timestamp())
            .map(|_| ())
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        check_schema(&UserType::new()).unwrap();
        check_schema(&GroupType::new()).unwrap();
        check_schema(&PolicyType::new()).unwrap();
        check_schema(&MembershipType::new()).unwrap();
        check_schema(&PasswordPolicyType::new()).unwrap();
        check_schema(&KmsKeyType::new()).unwrap();
        check_schema(&RoleType::new()).unwrap();
    }
}
