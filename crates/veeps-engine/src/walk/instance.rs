//! One resource instance: refresh, plan its change (create, update, replace, delete, or nothing) and, in apply mode, make it through its controller with intent recorded first.

use super::*;

impl Walk {
    /// Plans (and in apply mode, performs) the change to one instance. Returns the value
    /// references to it see.
    pub(crate) async fn instance(
        &self,
        rt: &Arc<dyn Resource>,
        rc: &ResourceConfig,
        inst: &Instance,
        deps: &[String],
        masked: &BTreeSet<String>,
    ) -> Result<Value, Diagnostics> {
        let schema = rt.schema();
        let prior = self.prior.get(&inst.address);
        let (action, replace_paths, reason, config) = match prior {
            _ if self.mode == Mode::Validate => (Action::Create, vec![], None, inst.config.clone()),
            None => (
                Action::Create,
                vec![],
                self.prior.gone.get(&inst.address).cloned(),
                inst.config.clone(),
            ),
            Some(p) if p.record.status == ResourceStatus::Creating => (
                Action::Create,
                vec![],
                Some("its creation was interrupted; creating it again".into()),
                inst.config.clone(),
            ),
            Some(p) if p.record.status == ResourceStatus::Tainted => (
                Action::Replace,
                vec![],
                Some("a previous operation on it failed".into()),
                inst.config.clone(),
            ),
            Some(p) => {
                let (cfg, changed, forces) = diff(schema, &rc.lifecycle, &p.attrs, &inst.config);
                if !forces.is_empty() {
                    (Action::Replace, forces, None, cfg)
                } else if changed {
                    (Action::Update, vec![], None, cfg)
                } else {
                    (Action::NoOp, vec![], None, cfg)
                }
            }
        };
        if rc.lifecycle.prevent_destroy && action == Action::Replace {
            return Err(Diagnostic::at(
                &rc.loc,
                format!(
                    "{} has lifecycle.prevent_destroy set, but the plan replaces it ({})",
                    inst.address,
                    replace_paths.join(", ")
                ),
            )
            .with_detail("Remove prevent_destroy, or undo the change that forces replacement.")
            .into());
        }
        let planned = match action {
            Action::Create | Action::Replace => {
                let mut v = with_unknown_computed(schema, &config);
                if let Value::Object(o) = &mut v {
                    o.extend(rt.plan_computed(&self.ctx(&inst.address), &config));
                }
                v
            }
            Action::Update => {
                let mut v = merge(
                    &prior.map(|p| p.attrs.clone()).unwrap_or(Value::Null),
                    &config,
                );
                // Computed attributes that follow the configuration (like a version).
                let identity = prior.map_or(inst.address.as_str(), |p| p.record.identity());
                if let Value::Object(o) = &mut v {
                    o.extend(rt.plan_computed(&self.ctx(identity), &config));
                }
                v
            }
            _ => prior.map(|p| p.attrs.clone()).unwrap_or(Value::Null),
        };
        let before = prior.map(|p| mask(&p.attrs, masked).to_plan_json());
        let change = ResourceChange {
            address: inst.address.clone(),
            type_name: rc.type_name.clone(),
            action,
            before: if action == Action::Create {
                None
            } else {
                before
            },
            after: Some(mask(&planned, masked).to_plan_json()),
            replace_paths,
            reason,
        };
        {
            let mut r = self.result.lock().expect("result lock");
            r.changes.push(change);
            let attr_locs = rc
                .body
                .attrs
                .iter()
                .map(|(k, a)| (k.clone(), a.expr.loc()))
                .collect();
            r.planned.push((
                veeps_resource::Planned {
                    type_name: rc.type_name.clone(),
                    address: inst.address.clone(),
                    value: planned.clone(),
                },
                rc.loc.clone(),
                attr_locs,
            ));
        }
        if self.mode != Mode::Apply {
            return Ok(planned);
        }
        if config.has_unknown() {
            return Err(Diagnostic::at(
                &rc.loc,
                format!(
                    "{}: the configuration depends on values that are still unknown during apply",
                    inst.address
                ),
            )
            .into());
        }
        let engine = self.engine.clone().expect("apply has an engine");
        let ctx = self.ctx(&inst.address);
        // The existing object, by the address its controller knows it by.
        let old_ctx = self.ctx(prior.map_or(inst.address.as_str(), |p| p.record.identity()));
        let started = Instant::now();
        if action != Action::NoOp {
            self.emit(Event::Start {
                address: inst.address.clone(),
                action,
            });
        }
        let op = async {
            match action {
                Action::NoOp => {
                    let p = prior.expect("no-op has prior");
                    if p.refreshed {
                        engine
                            .save(
                                &self.env,
                                rt,
                                &inst.address,
                                &p.attrs,
                                deps,
                                ResourceStatus::Ready,
                                rc.lifecycle.create_before_destroy,
                                masked,
                                p.record.identity.as_deref(),
                            )
                            .await?;
                    }
                    Ok(p.attrs.clone())
                }
                Action::Create => {
                    self.create(
                        &engine,
                        rt,
                        &ctx,
                        inst,
                        &config,
                        deps,
                        rc.lifecycle.create_before_destroy,
                        masked,
                    )
                    .await
                }
                Action::Update => {
                    let p = prior.expect("update has prior");
                    let _permit = engine.permits.acquire().await;
                    let new = rt
                        .update(&old_ctx, &p.attrs, &config)
                        .await
                        .map_err(|e| e.to_string())?;
                    engine
                        .save(
                            &self.env,
                            rt,
                            &inst.address,
                            &new,
                            deps,
                            ResourceStatus::Ready,
                            rc.lifecycle.create_before_destroy,
                            masked,
                            p.record.identity.as_deref(),
                        )
                        .await?;
                    Ok(new)
                }
                Action::Replace => {
                    let p = prior.expect("replace has prior");
                    if rc.lifecycle.create_before_destroy {
                        let deposed = format!("{}#deposed", inst.address);
                        engine
                            .save(
                                &self.env,
                                rt,
                                &deposed,
                                &p.attrs,
                                deps,
                                ResourceStatus::Ready,
                                true,
                                masked,
                                Some(p.record.identity()),
                            )
                            .await?;
                        let new = self
                            .create(&engine, rt, &ctx, inst, &config, deps, true, masked)
                            .await?;
                        {
                            let _permit = engine.permits.acquire().await;
                            rt.delete(&old_ctx, &p.attrs)
                                .await
                                .map_err(|e| format!("deleting the replaced object: {e}"))?;
                        }
                        engine.forget(&self.env, &deposed)?;
                        Ok(new)
                    } else {
                        {
                            let _permit = engine.permits.acquire().await;
                            rt.delete(&old_ctx, &p.attrs)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        engine.forget(&self.env, &inst.address)?;
                        self.create(&engine, rt, &ctx, inst, &config, deps, false, masked)
                            .await
                    }
                }
                Action::Delete => unreachable!("deletes are not part of the walk"),
            }
        };
        let result = self.with_progress(&inst.address, action, started, op).await;
        match result {
            Ok(v) => {
                if action != Action::NoOp {
                    let id = v.get("id").and_then(|i| i.to_template_string());
                    self.emit(Event::Done {
                        address: inst.address.clone(),
                        action,
                        elapsed: started.elapsed().as_secs_f64(),
                        id,
                    });
                }
                Ok(v)
            }
            Err(msg) => {
                self.emit(Event::Failed {
                    address: inst.address.clone(),
                    action,
                    error: msg.clone(),
                });
                self.result
                    .lock()
                    .expect("result lock")
                    .failures
                    .push((inst.address.clone(), msg.clone()));
                Err(Diagnostic::at(
                    &rc.loc,
                    format!("{}: {} failed: {msg}", inst.address, action.verb().1),
                )
                .into())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        engine: &Engine,
        rt: &Arc<dyn Resource>,
        ctx: &Ctx,
        inst: &Instance,
        config: &Value,
        deps: &[String],
        cbd: bool,
        masked: &BTreeSet<String>,
    ) -> Result<Value, String> {
        // Record the intent first: a crash mid-create leaves a record the next apply finishes.
        engine
            .save(
                &self.env,
                rt,
                &inst.address,
                config,
                deps,
                ResourceStatus::Creating,
                cbd,
                masked,
                None,
            )
            .await?;
        let state = {
            let _permit = engine.permits.acquire().await;
            rt.create(ctx, config).await.map_err(|e| e.to_string())?
        };
        if state.has_unknown() {
            return Err("the controller returned a state with unknown values".into());
        }
        engine
            .save(
                &self.env,
                rt,
                &inst.address,
                &state,
                deps,
                ResourceStatus::Ready,
                cbd,
                masked,
                None,
            )
            .await?;
        Ok(state)
    }
}
